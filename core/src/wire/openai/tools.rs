//! `tools` → Gemini `tools: [{functionDeclarations}]`, and `tool_choice` →
//! `toolConfig.functionCallingConfig`.
//!
//! A function's `parameters` is carried whole as `parametersJsonSchema` (full JSON Schema:
//! `$ref`, `anyOf`, `additionalProperties`), never squeezed into the OpenAPI subset of
//! `parameters`.

use super::bad;
use crate::error::RouterError;
use serde_json::{json, Map, Value};

/// The Gemini `tools` array for OpenAI `tools`, and the declared names. `None` for an absent,
/// null or empty list.
pub(super) fn declarations(v: Option<&Value>) -> Result<Option<(Value, Vec<String>)>, RouterError> {
    let list = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) if a.is_empty() => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(bad("invalid_field", "tools: must be an array")),
    };
    let mut decls = Vec::new();
    let mut names = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let at = format!("tools[{i}]");
        let t = t.as_object().ok_or_else(|| bad("invalid_field", format!("{at}: must be an object")))?;
        match t.get("type").and_then(Value::as_str) {
            Some("function") => {}
            Some(ty) => {
                return Err(bad("unsupported_field", format!("{at}.type '{ty}' is not supported (function only)")))
            }
            None => return Err(bad("missing_field", format!("{at}.type: is required"))),
        }
        let f = t
            .get("function")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("missing_field", format!("{at}.function: is required (an object)")))?;
        let name = match f.get("name") {
            Some(Value::String(n)) if valid_function_name(n) => n.clone(),
            Some(_) => {
                return Err(bad(
                    "invalid_field",
                    format!("{at}.function.name: must be 1-64 of a-z, A-Z, 0-9, '_', '.', ':', '-'"),
                ))
            }
            None => return Err(bad("missing_field", format!("{at}.function.name: is required"))),
        };
        if names.contains(&name) {
            return Err(bad("invalid_field", format!("{at}.function.name: '{name}' is declared twice")));
        }
        let mut d = Map::new();
        d.insert("name".into(), json!(name));
        match f.get("description") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => {
                d.insert("description".into(), json!(s));
            }
            Some(_) => return Err(bad("invalid_field", format!("{at}.function.description: must be a string"))),
        }
        match f.get("parameters") {
            None | Some(Value::Null) => {}
            Some(p @ Value::Object(_)) => {
                d.insert("parametersJsonSchema".into(), p.clone());
            }
            Some(_) => {
                return Err(bad("invalid_field", format!("{at}.function.parameters: must be a JSON Schema object")))
            }
        }
        // `strict` has no Gemini meaning: the schema is enforced as given.
        names.push(name);
        decls.push(Value::Object(d));
    }
    Ok(Some((json!([{"functionDeclarations": decls}]), names)))
}

/// Gemini's rule for function names.
pub(super) fn valid_function_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
}

/// `tool_choice` → `toolConfig`: auto → AUTO, none → NONE, required → ANY, a named function →
/// ANY with `allowedFunctionNames: [name]`.
pub(super) fn tool_config(v: Option<&Value>, declared: &[String]) -> Result<Option<Value>, RouterError> {
    let mode = |m: &str| json!({"functionCallingConfig": {"mode": m}});
    let need_tools = |what: &str| {
        if declared.is_empty() {
            Err(bad("invalid_field", format!("tool_choice: '{what}' needs tools")))
        } else {
            Ok(())
        }
    };
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Ok(Some(mode("AUTO"))),
            "none" => Ok(Some(mode("NONE"))),
            "required" => {
                need_tools("required")?;
                Ok(Some(mode("ANY")))
            }
            other => Err(bad("invalid_field", format!("tool_choice: '{other}' is not auto, none or required"))),
        },
        Some(Value::Object(o)) => {
            if let Some(ty) = o.get("type").and_then(Value::as_str).filter(|t| *t != "function") {
                return Err(bad("unsupported_field", format!("tool_choice.type '{ty}' is not supported")));
            }
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| bad("missing_field", "tool_choice.function.name: is required"))?;
            need_tools("function")?;
            if !declared.iter().any(|d| d == name) {
                return Err(bad("invalid_field", format!("tool_choice.function.name: '{name}' is not in tools")));
            }
            Ok(Some(json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}})))
        }
        Some(_) => Err(bad("invalid_field", "tool_choice: must be a string or {type: function, function: {name}}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> Value {
        json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
            "parameters": {"type": "object", "$defs": {"unit": {"enum": ["C", "F"]}},
                "properties": {"city": {"type": "string"}, "unit": {"$ref": "#/$defs/unit"},
                               "when": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
                "required": ["city"], "additionalProperties": false}, "strict": true}}])
    }

    #[test]
    fn tools_become_declarations_with_full_json_schema() {
        let (tools, names) = declarations(Some(&weather())).unwrap().unwrap();
        let d = &tools[0]["functionDeclarations"][0];
        assert_eq!(d["name"], "get_weather");
        assert_eq!(d["description"], "Weather now");
        assert_eq!(d["parametersJsonSchema"], weather()[0]["function"]["parameters"]);
        assert!(d.get("parameters").is_none() && d.get("strict").is_none());
        assert_eq!(names, vec!["get_weather"]);
        assert_eq!(declarations(Some(&json!([]))).unwrap(), None);
    }

    #[test]
    fn bad_tools_are_named() {
        for (t, code, needle) in [
            (json!({}), "invalid_field", "tools"),
            (json!([{"type": "code_interpreter"}]), "unsupported_field", "tools[0].type"),
            (json!([{"type": "function"}]), "missing_field", "tools[0].function"),
            (json!([{"type": "function", "function": {"name": "a b"}}]), "invalid_field", "tools[0].function.name"),
            (
                json!([{"type": "function", "function": {"name": "f", "parameters": "x"}}]),
                "invalid_field",
                "parameters",
            ),
        ] {
            let e = declarations(Some(&t)).unwrap_err();
            assert_eq!(e.code(), code, "{t}");
            assert!(e.message().contains(needle), "{}", e.message());
        }
    }

    #[test]
    fn tool_choice_maps_to_function_calling_config() {
        let names = vec!["get_weather".to_string()];
        let mode = |v: Value| tool_config(Some(&v), &names).unwrap().unwrap()["functionCallingConfig"].clone();
        assert_eq!(mode(json!("auto")), json!({"mode": "AUTO"}));
        assert_eq!(mode(json!("none")), json!({"mode": "NONE"}));
        assert_eq!(mode(json!("required")), json!({"mode": "ANY"}));
        assert_eq!(
            mode(json!({"type": "function", "function": {"name": "get_weather"}})),
            json!({"mode": "ANY", "allowedFunctionNames": ["get_weather"]})
        );
        let other = json!({"type": "function", "function": {"name": "nope"}});
        assert_eq!(tool_config(Some(&other), &names).unwrap_err().code(), "invalid_field");
        assert_eq!(tool_config(Some(&json!("required")), &[]).unwrap_err().code(), "invalid_field");
        assert_eq!(tool_config(Some(&json!("sometimes")), &names).unwrap_err().code(), "invalid_field");
        assert_eq!(tool_config(None, &names).unwrap(), None);
    }
}
