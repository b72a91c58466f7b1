//! Checking `contents` entries and media parts before anything leaves the worker, so a bad
//! request is a 400 naming the field, never an upstream error.

use crate::error::RouterError;
use serde_json::Value;

fn field_err(code: &'static str, msg: impl Into<String>) -> RouterError {
    RouterError::bad_request(code, msg)
}

/// Checks one `contents` entry: `{role: user|model, parts: [{text}]}` with non-empty text.
pub fn validate_content(c: &Value, at: &str) -> Result<(), RouterError> {
    let obj = c.as_object().ok_or_else(|| field_err("invalid_field", format!("{at}: must be an object")))?;
    match obj.get("role") {
        None | Some(Value::Null) => {}
        Some(Value::String(r)) if r == "user" || r == "model" => {}
        Some(Value::String(r)) => {
            return Err(field_err("invalid_field", format!("{at}.role: must be 'user' or 'model', got '{r}'")))
        }
        Some(_) => return Err(field_err("invalid_field", format!("{at}.role: must be 'user' or 'model'"))),
    }
    let parts = obj
        .get("parts")
        .and_then(Value::as_array)
        .ok_or_else(|| field_err("invalid_field", format!("{at}.parts: must be an array")))?;
    if parts.is_empty() {
        return Err(field_err("empty_message", format!("{at}.parts: must not be empty")));
    }
    for (i, p) in parts.iter().enumerate() {
        if !p.is_object() {
            return Err(field_err("invalid_field", format!("{at}.parts[{i}]: must be an object")));
        }
        if let Some(t) = p.get("text") {
            if !t.is_string() {
                return Err(field_err("invalid_field", format!("{at}.parts[{i}].text: must be a string")));
            }
        }
        validate_media(p, &format!("{at}.parts[{i}]"))?;
    }
    Ok(())
}

/// Checks the media of one part, in either spelling Google accepts: `inlineData` (or
/// `inline_data`) needs a `mimeType` (or `mime_type`) and base64 `data`; `fileData` (or
/// `file_data`) needs a `fileUri` (or `file_uri`). Everything passes through unchanged.
pub fn validate_media(p: &Value, at: &str) -> Result<(), RouterError> {
    fn pick<'v>(v: &'v Value, camel: &'static str, snake: &'static str) -> Option<(&'static str, &'v Value)> {
        match v.get(camel) {
            Some(x) => Some((camel, x)),
            None => v.get(snake).map(|x| (snake, x)),
        }
    }
    let string = |v: &Value, name: &str, camel: &'static str, snake: &'static str| match pick(v, camel, snake) {
        Some((_, Value::String(s))) if !s.is_empty() => Ok(()),
        Some((k, _)) => Err(field_err("invalid_media", format!("{at}.{name}.{k}: must be a non-empty string"))),
        None => Err(field_err("invalid_media", format!("{at}.{name}.{camel}: is required"))),
    };
    if let Some((name, d)) = pick(p, "inlineData", "inline_data") {
        if !d.is_object() {
            return Err(field_err("invalid_media", format!("{at}.{name}: must be an object")));
        }
        string(d, name, "mimeType", "mime_type")?;
        match d.get("data") {
            Some(Value::String(b)) => crate::wire::base64::check(b)
                .map_err(|why| field_err("invalid_base64", format!("{at}.{name}.data: {why}")))?,
            Some(_) => return Err(field_err("invalid_base64", format!("{at}.{name}.data: must be a base64 string"))),
            None => return Err(field_err("invalid_media", format!("{at}.{name}.data: is required"))),
        }
    }
    if let Some((name, f)) = pick(p, "fileData", "file_data") {
        if !f.is_object() {
            return Err(field_err("invalid_media", format!("{at}.{name}: must be an object")));
        }
        string(f, name, "fileUri", "file_uri")?;
    }
    Ok(())
}
