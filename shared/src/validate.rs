//! Typed input: JSON bodies parsed into structs with a nesting limit, unknown and duplicate
//! fields refused, then checked with `validator`.
//!
//! Syntax problems (invalid UTF-8 or JSON, nesting deeper than [`MAX_DEPTH`], unknown or
//! duplicate fields) are 400; a well-formed body with wrong types, missing fields or values
//! outside their rules is 422 with one error per field. Messages never echo submitted values.

use serde::de::DeserializeOwned;
use validator::{Validate, ValidationErrors, ValidationErrorsKind};

use crate::error::{ApiError, FieldError};

/// Deepest JSON nesting accepted.
pub const MAX_DEPTH: usize = 32;

/// Parses and validates a JSON body.
pub fn json<T: DeserializeOwned + Validate>(body: &[u8]) -> Result<T, ApiError> {
    let value: T = parse(body)?;
    value
        .validate()
        .map_err(|e| ApiError::Validation(field_errors(&e)))?;
    Ok(value)
}

/// Parses a JSON body without running `validator` rules.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::BadRequest("The request body is not valid UTF-8.".into()))?;
    if text.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "A JSON request body is required.".into(),
        ));
    }
    if depth(text.as_bytes()) > MAX_DEPTH {
        return Err(ApiError::BadRequest(format!(
            "The JSON body is nested deeper than {MAX_DEPTH} levels."
        )));
    }
    let de = &mut serde_json::Deserializer::from_str(text);
    let result = serde_path_to_error::deserialize(de);
    result.map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        classify(&path, &inner)
    })
}

fn classify(path: &str, err: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::BadRequest(format!(
            "The request body is not valid JSON (line {}, column {}).",
            err.line(),
            err.column()
        )),
        Category::Data => {
            let msg = err.to_string();
            if let Some(name) = quoted(&msg, "unknown field `") {
                return ApiError::BadRequest(format!("Unknown field `{}`.", join(path, &name)));
            }
            if let Some(name) = quoted(&msg, "duplicate field `") {
                return ApiError::BadRequest(format!("Duplicate field `{}`.", join(path, &name)));
            }
            if let Some(name) = quoted(&msg, "missing field `") {
                return ApiError::Validation(vec![FieldError::new(
                    join(path, &name),
                    "is required",
                )]);
            }
            let message = if msg.starts_with("invalid type") {
                msg.split(", expected ")
                    .nth(1)
                    .map(|e| e.split(" at line").next().unwrap_or(e))
                    .map(|e| format!("must be {}", sanitize_expected(e)))
                    .unwrap_or_else(|| "has the wrong type".into())
            } else if msg.starts_with("invalid length") {
                "has the wrong number of items".into()
            } else {
                "has an invalid value".into()
            };
            let field = if path == "." {
                "body".into()
            } else {
                path.to_string()
            };
            ApiError::Validation(vec![FieldError::new(field, message)])
        }
    }
}

fn sanitize_expected(e: &str) -> String {
    match e {
        e if e.starts_with("u") || e.starts_with("i") => "an integer".into(),
        e if e.starts_with("f") => "a number".into(),
        "a string" | "a boolean" | "a sequence" | "a map" => e.into(),
        e if e.starts_with("struct") => "an object".into(),
        e if e.starts_with("a sequence") => "an array".into(),
        _ => "of another type".into(),
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() || path == "." {
        name.into()
    } else {
        format!("{path}.{name}")
    }
}

fn quoted(msg: &str, prefix: &str) -> Option<String> {
    let rest = msg.split_once(prefix)?.1;
    let name = rest.split('`').next()?;
    Some(name.chars().filter(|c| !c.is_control()).take(64).collect())
}

/// The deepest nesting of arrays and objects in a JSON text, counting outside strings.
pub fn depth(json: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in json {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Flattens `validator` errors into field errors with safe messages.
pub fn field_errors(errors: &ValidationErrors) -> Vec<FieldError> {
    let mut out = Vec::new();
    collect(errors, String::new(), &mut out);
    out.sort_by(|a, b| a.field.cmp(&b.field));
    out
}

fn collect(errors: &ValidationErrors, prefix: String, out: &mut Vec<FieldError>) {
    for (field, kind) in errors.errors() {
        let name = if prefix.is_empty() {
            field.to_string()
        } else {
            format!("{prefix}.{field}")
        };
        match kind {
            ValidationErrorsKind::Field(errs) => {
                for e in errs {
                    let message = e
                        .message
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_else(|| format!("fails the `{}` rule", e.code));
                    out.push(FieldError::new(name.clone(), message));
                }
            }
            ValidationErrorsKind::Struct(inner) => collect(inner, name, out),
            ValidationErrorsKind::List(items) => {
                for (i, inner) in items {
                    collect(inner, format!("{name}[{i}]"), out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, Validate)]
    #[serde(deny_unknown_fields)]
    struct Login {
        #[validate(email(message = "must be a valid email address"))]
        email: String,
        #[validate(length(min = 12, message = "must be at least 12 characters"))]
        password: String,
    }

    #[derive(Debug, Deserialize, Validate)]
    #[serde(deny_unknown_fields)]
    struct Payment {
        #[validate(range(min = 50))]
        amount: i64,
    }

    fn status(r: Result<Login, ApiError>) -> u16 {
        r.map(|_| 200).unwrap_or_else(|e| e.status().as_u16())
    }

    #[test]
    fn given_valid_body_when_parsing_then_ok() {
        let r: Result<Login, _> = json(br#"{"email":"a@b.example","password":"long enough pass"}"#);
        assert!(r.is_ok());
    }

    #[test]
    fn given_syntax_problems_when_parsing_then_400() {
        assert_eq!(status(json(b"{\"email\":")), 400);
        assert_eq!(status(json(b"\xff\xfe")), 400);
        assert_eq!(status(json(b"")), 400);
        assert_eq!(
            status(json(br#"{"email":"a@b.c","password":"x","admin":true}"#)),
            400
        );
        assert_eq!(
            status(json(br#"{"email":"a@b.c","email":"d@e.f","password":"x"}"#)),
            400
        );
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(status(json(deep.as_bytes())), 400);
    }

    #[test]
    fn given_wrong_values_when_parsing_then_422_with_fields_and_no_echo() {
        let err = json::<Login>(br#"{"email":"nope","password":"shortpw"}"#).unwrap_err();
        let ApiError::Validation(fields) = err else {
            panic!("422 expected")
        };
        assert_eq!(fields.len(), 2);
        assert!(!format!("{fields:?}").contains("shortpw"));
        let err = json::<Login>(br#"{"email":"a@b.example"}"#).unwrap_err();
        assert!(matches!(err, ApiError::Validation(ref f) if f[0].field == "password"));
        let err = json::<Payment>(br#"{"amount":"100"}"#).unwrap_err();
        assert!(
            matches!(err, ApiError::Validation(ref f) if f[0].field == "amount" && f[0].message == "must be an integer")
        );
        let err = json::<Payment>(br#"{"amount":1.5}"#).unwrap_err();
        assert!(matches!(err, ApiError::Validation(ref f) if f[0].field == "amount"));
    }

    #[test]
    fn given_brackets_inside_strings_when_measuring_depth_then_ignored() {
        assert_eq!(depth(br#"{"a":"[[[[\"[["}"#), 1);
        assert_eq!(depth(br#"[[{"a":[1]}]]"#), 4);
    }
}
