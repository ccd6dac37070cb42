//! Reading a YAML or JSON document into a JSON value, and JSON pointers into it
//! (RFC 6901): what the OpenAPI and apictl importers share.

use serde_json::Value;

use crate::Problem;

/// Parses `text` as JSON when it starts with `{` or `[`, else as YAML (which JSON is a
/// subset of, but JSON parsers report JSON's errors better). `name` names the document
/// in the error, which carries the line and column.
///
/// Both parsers bound nesting (128 levels) and serde_yaml bounds alias expansion, so a
/// hostile document costs at most its own size a few times over.
pub fn parse(name: &str, text: &str) -> Result<Value, Problem> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        serde_json::from_str(trimmed).map_err(|e| {
            Problem::new(
                "",
                format!("{name}:{}:{}: not valid JSON: {e}", e.line(), e.column()),
            )
        })
    } else {
        serde_yaml::from_str(trimmed).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!("{}:{}", l.line(), l.column()))
                .unwrap_or_else(|| "1:1".into());
            Problem::new("", format!("{name}:{at}: not valid YAML: {e}"))
        })
    }
}

/// One reference token escaped for a JSON pointer (`~` is `~0`, `/` is `~1`).
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// `base` followed by the escaped `token`.
pub fn child(base: &str, token: &str) -> String {
    format!("{base}/{}", escape(token))
}

/// The value a local reference (`#/components/schemas/Pet`) points at, if any.
pub fn resolve<'v>(root: &'v Value, reference: &str) -> Option<&'v Value> {
    let pointer = reference.strip_prefix('#')?;
    let decoded = percent_decode(pointer)?;
    root.pointer(&decoded)
}

/// `%xx` escapes decoded (a `$ref` is a URI fragment); `None` if one is malformed.
fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Every `$ref` of the document that does not resolve: local ones that point nowhere,
/// and external ones (another file or URL), which an import cannot follow.
pub fn check_references(root: &Value, document: &str, problems: &mut Vec<Problem>) {
    let mut stack: Vec<(String, &Value)> = vec![(String::new(), root)];
    while let Some((pointer, value)) = stack.pop() {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(reference)) = map.get("$ref") {
                    let at = child(&pointer, "$ref");
                    if !reference.starts_with('#') {
                        problems.push(Problem::new(
                            at,
                            format!(
                                "{reference:?} refers outside {document}: only local references \
                                 (#/...) are followed; bundle the document first"
                            ),
                        ));
                    } else if resolve(root, reference).is_none() {
                        problems.push(Problem::new(
                            at,
                            format!("{reference:?} does not resolve in {document}"),
                        ));
                    }
                }
                for (key, v) in map.iter().rev() {
                    stack.push((child(&pointer, key), v));
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate().rev() {
                    stack.push((format!("{pointer}/{i}"), v));
                }
            }
            _ => {}
        }
    }
}

/// The value at `pointer`, following a chain of local `$ref`s (at most 16 hops), with
/// the pointer it was found at; a problem at the `$ref` that fails.
pub fn follow<'v>(
    root: &'v Value,
    pointer: String,
    value: &'v Value,
) -> Result<(String, &'v Value), Problem> {
    let (mut pointer, mut value) = (pointer, value);
    for _ in 0..16 {
        let Some(Value::String(reference)) = value.get("$ref") else {
            return Ok((pointer, value));
        };
        let target = resolve(root, reference).ok_or_else(|| {
            Problem::new(
                child(&pointer, "$ref"),
                format!("{reference:?} does not resolve"),
            )
        })?;
        pointer = reference.trim_start_matches('#').to_string();
        value = target;
    }
    Err(Problem::new(
        child(&pointer, "$ref"),
        "more than 16 $ref hops (a reference cycle?)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointers_escape_and_references_resolve() {
        assert_eq!(child("/paths", "/pets/{id}"), "/paths/~1pets~1{id}");
        assert_eq!(escape("a~b"), "a~0b");
        let doc = json!({"components": {"schemas": {"Pet": {"type": "object"}, "a/b": 1}}});
        assert!(resolve(&doc, "#/components/schemas/Pet").is_some());
        assert!(resolve(&doc, "#/components/schemas/a~1b").is_some());
        assert!(resolve(&doc, "#/components/schemas/Nope").is_none());
        assert!(resolve(&doc, "other.yaml#/x").is_none());
    }

    #[test]
    fn broken_and_external_references_are_reported_where_they_are() {
        let doc = json!({"paths": {"/x": {"get": {"responses": {"200": {"$ref": "#/nope"}}}}},
                         "components": {"a": {"$ref": "other.yaml#/b"}, "ok": {"$ref": "#/paths"}}});
        let mut problems = Vec::new();
        check_references(&doc, "doc", &mut problems);
        let at: Vec<&str> = problems.iter().map(|p| p.pointer.as_str()).collect();
        assert_eq!(
            at,
            ["/components/a/$ref", "/paths/~1x/get/responses/200/$ref"]
        );
    }

    #[test]
    fn yaml_and_json_errors_name_the_line() {
        let e = parse("doc.yaml", "a: 1\nb: [\n").unwrap_err();
        assert!(e.message.starts_with("doc.yaml:"), "{e}");
        let e = parse("doc.json", "{\n \"a\": }").unwrap_err();
        assert!(e.message.starts_with("doc.json:2:"), "{e}");
        assert_eq!(parse("d", "'200': x").unwrap(), json!({"200": "x"}));
        assert_eq!(parse("d", "200: x").unwrap(), json!({"200": "x"}));
    }
}
