//! Typed input: JSON bodies parsed into structs with a nesting limit, unknown and duplicate
//! fields refused, then checked with `validator`.
//!
//! Syntax problems (invalid UTF-8 or JSON, nesting deeper than [`MAX_DEPTH`], unknown fields,
//! a key repeated in any object at any depth) are 400; a well-formed body with wrong types,
//! missing fields or values outside their rules is 422 with one error per field. Messages never
//! echo submitted values.
//!
//! Integer fields read JSON numbers as JSON's data model has them: `885` and `885.0` are the
//! same number (see [`integer`]); fractions, strings and values out of range are 422.

use std::collections::HashSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
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
    let unique = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize::<_, UniqueKeys>(unique).map_err(path_error)?;
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(path_error)
}

fn path_error(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = err.path().to_string();
    let inner = err.into_inner();
    classify(&path, &inner)
}

/// Any JSON value, refusing an object that repeats a key, at any depth. A struct refuses its
/// own repeated fields, but a map (such as payment metadata) would keep the last value and an
/// inner object would be skipped unread, so parsers that disagree on which value wins could
/// be played against each other.
struct UniqueKeys;

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_unit<E: de::Error>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
            }
            map.next_value::<UniqueKeys>()?;
        }
        Ok(UniqueKeys)
    }
}

/// Integer fields that accept a JSON number with no fractional part whatever its spelling
/// (`885`, `885.0`, `8.85e2`), as JSON's data model and JSON Schema's `integer` do. A fraction,
/// a float beyond 2^53 (where it no longer names one integer), a string or a value outside the
/// field's type is refused, so nothing is ever rounded or truncated.
///
/// Use `#[serde(deserialize_with = "integer::required")]`, or
/// `#[serde(default, deserialize_with = "integer::optional")]` on an `Option` (where `null`
/// is the same as a missing field).
pub mod integer {
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::{self, Deserializer, Unexpected, Visitor};

    /// Largest magnitude up to which every integer has an exact `f64`.
    const EXACT_F64: f64 = 9_007_199_254_740_992.0;

    struct Integral<T>(PhantomData<T>);

    impl<T: TryFrom<i128>> Integral<T> {
        fn fit<E: de::Error>(&self, v: i128, unexpected: Unexpected<'_>) -> Result<T, E> {
            T::try_from(v).map_err(|_| E::invalid_value(unexpected, self))
        }
    }

    impl<'de, T: TryFrom<i128>> Visitor<'de> for Integral<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer")
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            self.fit(i128::from(v), Unexpected::Signed(v))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            self.fit(i128::from(v), Unexpected::Unsigned(v))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
            if v.fract() != 0.0 || !v.is_finite() {
                return Err(E::invalid_type(Unexpected::Float(v), &self));
            }
            if v.abs() > EXACT_F64 {
                return Err(E::invalid_value(Unexpected::Float(v), &self));
            }
            // Exact: an integral f64 no larger than 2^53 in magnitude.
            self.fit(v as i128, Unexpected::Float(v))
        }
    }

    struct Optional<T>(PhantomData<T>);

    impl<'de, T: TryFrom<i128>> Visitor<'de> for Optional<T> {
        type Value = Option<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer")
        }

        fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
            d.deserialize_any(Integral(PhantomData)).map(Some)
        }
    }

    /// An integer field.
    pub fn required<'de, D: Deserializer<'de>, T: TryFrom<i128>>(d: D) -> Result<T, D::Error> {
        d.deserialize_any(Integral(PhantomData))
    }

    /// An optional integer field; `null` is `None`.
    pub fn optional<'de, D: Deserializer<'de>, T: TryFrom<i128>>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        d.deserialize_option(Optional(PhantomData))
    }
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
            let path = &safe_path(path);
            if let Some(name) = quoted(&msg, "unknown field `").map(|n| safe_path(&n)) {
                // The path of an unknown field already ends with the field itself.
                let field = if *path == name || path.ends_with(&format!(".{name}")) {
                    path.to_string()
                } else {
                    join(path, &name)
                };
                return ApiError::BadRequest(format!("Unknown field `{field}`."));
            }
            if let Some(name) = quoted(&msg, "duplicate field `").map(|n| safe_path(&n)) {
                return ApiError::BadRequest(format!("Duplicate field `{}`.", join(path, &name)));
            }
            if let Some(name) = quoted(&msg, "missing field `").map(|n| safe_path(&n)) {
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

/// Longest path segment a problem body repeats.
const MAX_SEGMENT_CHARS: usize = 40;

/// Longest path a problem body repeats; a longer one (many short client keys) is `*`.
const MAX_PATH_CHARS: usize = 120;

/// `path` as a problem body may show it: each dot-separated segment that looks like a schema
/// field (a letter or `_`, then up to 39 letters, digits, `_` or `-`, with `[n]` indexes) is
/// kept, and any other segment, which can only be a client's own key, becomes `*`. A request's
/// text is never repeated back: a key made of markup or 3,000 characters comes back as `*`.
pub fn safe_path(path: &str) -> String {
    if path == "." {
        return path.into();
    }
    let safe = path
        .split('.')
        .map(|segment| {
            let name = segment.split('[').next().unwrap_or_default();
            let indexes = &segment[name.len()..];
            let name_ok = name.chars().count() <= MAX_SEGMENT_CHARS
                && name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            let indexes_ok = indexes.split_inclusive(']').all(|i| {
                i.starts_with('[')
                    && i.ends_with(']')
                    && i[1..i.len() - 1].bytes().all(|b| b.is_ascii_digit())
                    && i.len() > 2
            });
            if name_ok && indexes_ok {
                segment.to_string()
            } else {
                "*".to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(".");
    if safe.chars().count() > MAX_PATH_CHARS {
        return "*".into();
    }
    safe
}

fn sanitize_expected(e: &str) -> String {
    match e {
        e if e.starts_with("u") || e.starts_with("i") || e == "an integer" => "an integer".into(),
        e if e.starts_with("f") => "a number".into(),
        "a string" | "a boolean" | "a sequence" | "a map" => e.into(),
        e if e.starts_with("struct") => "an object".into(),
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

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Counts {
        #[serde(deserialize_with = "integer::required")]
        n: i64,
        #[serde(default, deserialize_with = "integer::optional")]
        small: Option<u32>,
        #[serde(default)]
        tags: Option<std::collections::HashMap<String, String>>,
    }

    fn counts(body: &str) -> Result<Counts, ApiError> {
        parse(body.as_bytes())
    }

    fn field_message(r: Result<Counts, ApiError>) -> (String, String) {
        match r {
            Err(ApiError::Validation(f)) => (f[0].field.clone(), f[0].message.clone()),
            other => panic!("422 expected, got {other:?}"),
        }
    }

    #[test]
    fn given_integral_numbers_in_any_spelling_when_parsing_integers_then_the_same_value() {
        for body in [
            r#"{"n":885}"#,
            r#"{"n":885.0}"#,
            r#"{"n":8.85e2}"#,
            r#"{"n":885,"small":null}"#,
        ] {
            let c = counts(body).expect(body);
            assert_eq!(c.n, 885, "{body}");
            assert_eq!(c.small, None, "{body}");
        }
        assert_eq!(counts(r#"{"n":1,"small":7.0}"#).expect("ok").small, Some(7));
        assert_eq!(counts(r#"{"n":-0.0}"#).expect("ok").n, 0);
    }

    #[test]
    fn given_fractions_strings_or_out_of_range_numbers_when_parsing_integers_then_422_without_rounding()
     {
        assert_eq!(
            field_message(counts(r#"{"n":885.5}"#)),
            ("n".into(), "must be an integer".into())
        );
        assert_eq!(
            field_message(counts(r#"{"n":"885"}"#)),
            ("n".into(), "must be an integer".into())
        );
        for body in [
            r#"{"n":1,"small":-1}"#,
            r#"{"n":1,"small":4294967296}"#,
            r#"{"n":1,"small":4294967296.0}"#,
            r#"{"n":9223372036854775808}"#,
            r#"{"n":1e300}"#,
            r#"{"n":9007199254740993.0}"#,
        ] {
            let (_, message) = field_message(counts(body));
            assert!(message.contains("invalid value"), "{body}: {message}");
        }
        assert_eq!(
            field_message(counts(r#"{"n":1,"small":0.5}"#)),
            ("small".into(), "must be an integer".into())
        );
        assert_eq!(counts(r#"{"n":1e400}"#).unwrap_err().status(), 400);
    }

    #[test]
    fn given_a_key_repeated_at_any_depth_when_parsing_then_400_naming_the_field() {
        for (body, field) in [
            (r#"{"n":1,"n":2}"#, "n"),
            (r#"{"n":1,"tags":{"a":"x","a":"y"}}"#, "tags.a"),
            (r#"{"n":1,"tags":{"a":"x","\u0061":"y"}}"#, "tags.a"),
        ] {
            match counts(body) {
                Err(ApiError::BadRequest(d)) => {
                    assert_eq!(d, format!("Duplicate field `{field}`."), "{body}")
                }
                other => panic!("{body}: 400 expected, got {other:?}"),
            }
        }
        let distinct = counts(r#"{"n":1,"tags":{"a":"x","b":"x"}}"#).expect("distinct keys");
        assert_eq!(distinct.tags.map(|t| t.len()), Some(2));
        let nested: Result<serde_json::Value, _> = parse(br#"[{"a":[{"b":1,"b":1}]}]"#);
        assert_eq!(nested.unwrap_err().status(), 400);
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        inner: Vec<Login>,
    }

    #[test]
    fn given_unknown_fields_at_any_depth_when_parsing_then_400_naming_the_path_once() {
        let detail = |body: &str| match parse::<Outer>(body.as_bytes()) {
            Err(ApiError::BadRequest(d)) => d,
            other => panic!("400 expected, got {other:?}"),
        };
        assert_eq!(detail(r#"{"admin":true}"#), "Unknown field `admin`.");
        assert_eq!(
            detail(r#"{"inner":[{"email":"a@b.c","role":"x"}]}"#),
            "Unknown field `inner[0].role`."
        );
        let markup = format!("<img src=x onerror=alert(1)>{}", "a".repeat(3000));
        let body = serde_json::json!({ markup.clone(): true }).to_string();
        assert_eq!(detail(&body), "Unknown field `*`.", "the key is not echoed");
        let body =
            serde_json::json!({"inner": [{"email": "a@b.c", "password": "p", markup.clone(): 1}]})
                .to_string();
        assert_eq!(detail(&body), "Unknown field `inner[0].*`.");
        let dup = format!(r#"{{"inner":[], "{k}":1, "{k}":2}}"#, k = "k".repeat(300));
        assert!(!detail(&dup).contains("kkkk"), "{}", detail(&dup));
    }

    #[test]
    fn given_paths_when_made_safe_then_schema_shaped_segments_stay_and_others_become_stars() {
        assert_eq!(safe_path("messages[3].content"), "messages[3].content");
        assert_eq!(safe_path("metadata.order_id"), "metadata.order_id");
        assert_eq!(safe_path("metadata.<b>hi</b>"), "metadata.*");
        assert_eq!(safe_path(&"x".repeat(41)), "*");
        assert_eq!(safe_path(&"x".repeat(40)), "x".repeat(40));
        assert_eq!(safe_path("a[1x]"), "*");
        assert_eq!(safe_path("a[]"), "*");
        assert_eq!(safe_path("1abc"), "*");
        assert_eq!(safe_path("."), ".");
        let dotted = vec!["call_support_at_evil"; 40].join(".");
        assert_eq!(
            safe_path(&dotted),
            "*",
            "many short segments are not a schema path"
        );
    }

    #[test]
    fn given_brackets_inside_strings_when_measuring_depth_then_ignored() {
        assert_eq!(depth(br#"{"a":"[[[[\"[["}"#), 1);
        assert_eq!(depth(br#"[[{"a":[1]}]]"#), 4);
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Shapes {
        #[serde(default)]
        text: Option<String>,
        #[serde(default)]
        flag: Option<bool>,
        #[serde(default)]
        ratio: Option<f64>,
        #[serde(default)]
        count: Option<u16>,
        #[serde(default)]
        delta: Option<i8>,
        #[serde(default)]
        items: Option<Vec<String>>,
        #[serde(default)]
        labels: Option<std::collections::HashMap<String, String>>,
        #[serde(default)]
        inner: Option<Counts>,
        #[serde(default)]
        pair: Option<(u8, u8)>,
    }

    #[test]
    fn given_a_value_of_the_wrong_type_when_parsing_then_the_message_names_the_expected_kind() {
        let cases = [
            (r#"{"text":1}"#, "text", "must be a string"),
            (r#"{"flag":"yes"}"#, "flag", "must be a boolean"),
            (r#"{"ratio":"1.5"}"#, "ratio", "must be a number"),
            (r#"{"count":"7"}"#, "count", "must be an integer"),
            (r#"{"delta":"-7"}"#, "delta", "must be an integer"),
            (r#"{"items":"a,b"}"#, "items", "must be a sequence"),
            (r#"{"labels":["a"]}"#, "labels", "must be a map"),
            (r#"{"inner":"{}"}"#, "inner", "must be an object"),
            (r#"{"pair":"1,2"}"#, "pair", "must be of another type"),
            (
                r#"{"inner":{"n":1,"small":"7"}}"#,
                "inner.small",
                "must be an integer",
            ),
        ];
        for (body, field, message) in cases {
            match parse::<Shapes>(body.as_bytes()) {
                Err(ApiError::Validation(f)) => {
                    assert_eq!(
                        (f[0].field.as_str(), f[0].message.as_str()),
                        (field, message),
                        "{body}"
                    )
                }
                other => panic!("{body}: 422 expected, got {other:?}"),
            }
        }
    }

    #[test]
    fn given_limits_exactly_when_parsing_then_accepted() {
        let nested = |levels: usize| {
            format!(
                "{{\"tags\":null,\"n\":{}1{}}}",
                "[".repeat(levels - 1),
                "]".repeat(levels - 1)
            )
        };
        // MAX_DEPTH levels pass the depth check (and then fail on the type, 422); one more is 400.
        let at = parse::<Counts>(nested(MAX_DEPTH).as_bytes()).unwrap_err();
        assert_eq!(at.status(), 422, "{at:?}");
        let over = parse::<Counts>(nested(MAX_DEPTH + 1).as_bytes()).unwrap_err();
        assert_eq!(over.status(), 400, "{over:?}");
        // 2^53 is the largest float converted exactly; it is accepted, 2^53 + 2 is not.
        assert_eq!(
            counts(r#"{"n":9007199254740992.0}"#).expect("2^53").n,
            9_007_199_254_740_992
        );
        assert!(counts(r#"{"n":9007199254740994.0}"#).is_err());
    }

    #[test]
    fn given_json_when_measuring_depth_then_closed_brackets_and_escapes_count_right() {
        assert_eq!(
            depth(br#"[[1],[2],[3]]"#),
            2,
            "closing brackets end a level"
        );
        assert_eq!(
            depth(br#"{"a":"\\","b":[[[1]]]}"#),
            4,
            "an escaped backslash ends"
        );
        assert_eq!(
            depth(br#"{"a":"\"[[[["}"#),
            1,
            "brackets in strings do not count"
        );
    }
}
