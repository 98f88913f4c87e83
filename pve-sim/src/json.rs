//! JSON as Proxmox's Perl tools print it: compact with sorted keys (`--output-format json`),
//! or pretty with 3-space indents and `"key" : value` (`json-pretty`, `qm guest cmd`).

use serde_json::Value;

/// Compact, keys sorted.
pub fn compact(value: &Value) -> String {
    // serde_json's map keeps keys sorted.
    value.to_string()
}

/// Perl `JSON->new->pretty->canonical` layout.
pub fn pretty(value: &Value) -> String {
    let mut out = String::new();
    write(value, 0, &mut out);
    out.push('\n');
    out
}

fn write(value: &Value, depth: usize, out: &mut String) {
    let pad = |depth: usize| "   ".repeat(depth);
    match value {
        Value::Array(items) if !items.is_empty() => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                out.push_str(&pad(depth + 1));
                write(item, depth + 1, out);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(depth));
            out.push(']');
        }
        Value::Object(map) if !map.is_empty() => {
            out.push_str("{\n");
            for (i, (key, item)) in map.iter().enumerate() {
                out.push_str(&pad(depth + 1));
                out.push_str(&Value::String(key.clone()).to_string());
                out.push_str(" : ");
                write(item, depth + 1, out);
                out.push_str(if i + 1 < map.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(depth));
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perl_layout() {
        let value = serde_json::json!({"b": [1, {"x": "y"}], "a": {}, "c": []});
        assert_eq!(
            pretty(&value),
            "{\n   \"a\" : {},\n   \"b\" : [\n      1,\n      {\n         \"x\" : \"y\"\n      }\n   ],\n   \"c\" : []\n}\n"
        );
        assert_eq!(compact(&value), r#"{"a":{},"b":[1,{"x":"y"}],"c":[]}"#);
    }
}
