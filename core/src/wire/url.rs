//! Reading request URLs as text, without a URL parser in the wasm.

/// The query of a request URL, undecoded: after the first `?`, before any `#`; empty without
/// one. `Request.url` is already serialized by the runtime's URL parser, so this is the query a
/// Rust URL parser would give back, without compiling one (with IDNA tables) into the wasm.
pub fn url_query(url: &str) -> &str {
    match url.split_once('?') {
        Some((_, rest)) => rest.split('#').next().unwrap_or(""),
        None => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_query_is_what_follows_the_question_mark() {
        assert_eq!(url_query("https://h.example/v1/conversations?offset=2&limit=5"), "offset=2&limit=5");
        assert_eq!(url_query("https://h.example/v1/conversations"), "");
        assert_eq!(url_query("https://h.example/x?"), "");
        assert_eq!(url_query("https://h.example/x?a=%20b?c#frag"), "a=%20b?c");
    }
}
