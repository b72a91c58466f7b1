//! The quick pass, part of `cargo test --workspace`: every target, `FUZZ_CASES` cases each
//! (default 300), a new random seed each run. The long run is `src/bin/fuzz-long.rs`.

#[test]
fn every_target_holds_its_properties() {
    let cases = std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let mut failures = Vec::new();
    for (name, target) in llm_key_router_fuzz::targets() {
        if let Err(e) = target(&mut llm_key_router_fuzz::runner(cases)) {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
