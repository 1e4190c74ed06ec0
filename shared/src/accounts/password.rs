//! Passwords: the registration policy and Argon2id hashing in PHC strings.

use std::collections::HashSet;
use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::config::PasswordPolicy;
use crate::error::{ApiError, FieldError};

/// Argon2id memory cost in KiB (OWASP's minimum: 19 MiB).
pub const MEMORY_KIB: u32 = 19_456;
/// Argon2id passes (OWASP: 2).
pub const ITERATIONS: u32 = 2;
/// Argon2id lanes (OWASP: 1).
pub const PARALLELISM: u32 = 1;

/// A hash of a random password with the current parameters, verified against for unknown
/// accounts so that a login costs the same whether or not the email exists.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$Rf6ZJq4K1S9Gq8mD2I7vFkJQm0aXl3zq7mN4o0b9u5s";

static COMMON: OnceLock<HashSet<&'static str>> = OnceLock::new();

fn common() -> &'static HashSet<&'static str> {
    COMMON.get_or_init(|| {
        include_str!("../../data/common-passwords.txt")
            .lines()
            .collect()
    })
}

fn argon2() -> Argon2<'static> {
    let params =
        Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None).expect("valid Argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

thread_local! {
    static OPERATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn count() {
    OPERATIONS.with(|c| c.set(c.get() + 1));
}

/// Argon2 operations (hashes and verifications) run on this thread so far, for tests and
/// benchmarks that show every path of register and login costs the same.
pub fn operations() -> u64 {
    OPERATIONS.with(std::cell::Cell::get)
}

/// Hashes a password with Argon2id and a random salt; returns the PHC string.
pub fn hash(password: &str) -> Result<String, ApiError> {
    count();
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| ApiError::Internal("password hashing failed".into()))
}

/// Verifies `password` against a stored PHC string (any Argon2 parameters); with `None`
/// verifies against a dummy hash and returns false, doing the same work.
pub fn verify(password: &str, stored: Option<&str>) -> bool {
    count();
    let phc = stored.unwrap_or(DUMMY_HASH);
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && stored.is_some()
}

/// Whether a stored hash uses weaker parameters than the current ones and should be replaced
/// after a successful login.
pub fn needs_rehash(stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return true;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return true;
    };
    parsed.algorithm.as_str() != "argon2id"
        || params.m_cost() < MEMORY_KIB
        || params.t_cost() < ITERATIONS
        || params.p_cost() < PARALLELISM
}

/// Characters of a password the strength estimate reads at most: the rules above apply to the
/// whole password, and a prefix can only look weaker than the whole, so the estimate stays a
/// lower bound while its cost stays bounded.
pub const SCORED_CHARS: usize = 40;

/// Distinct substitution characters (`4` for `a`, `|` for `i` or `l`, ...) the estimated part
/// may hold. zxcvbn tries every combination of the substitutions present over every substring,
/// which grows combinatorially: 20 of them and 108 more characters took 0.86 s in a release
/// build. The estimate reads the password up to its seventh distinct substitution character
/// (and at most [`SCORED_CHARS`]), which keeps its cost to a few milliseconds for any input
/// the body limit admits. Nothing is replaced, so digits keep their sequences and dates:
/// `password12345678` is read as `password123456` and refused; a password made almost only of
/// such characters is judged by its first few and refused, which a passphrase never is.
pub const SCORED_SUBSTITUTIONS: usize = 6;

/// zxcvbn's substitution characters (its `L33T_TABLE`).
const SUBSTITUTIONS: &str = "4@8({[<369!1|70$5+%2";

/// The part of `password` the strength estimate reads: its longest prefix of at most
/// [`SCORED_CHARS`] characters holding at most [`SCORED_SUBSTITUTIONS`] distinct substitution
/// characters.
pub fn scoring_input(password: &str) -> &str {
    let mut seen: Vec<char> = Vec::with_capacity(SCORED_SUBSTITUTIONS + 1);
    for (n, (i, c)) in password.char_indices().enumerate() {
        if n == SCORED_CHARS {
            return &password[..i];
        }
        if SUBSTITUTIONS.contains(c) && !seen.contains(&c) {
            if seen.len() == SCORED_SUBSTITUTIONS {
                return &password[..i];
            }
            seen.push(c);
        }
    }
    password
}

thread_local! {
    static SCORED: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((0, 0)) };
}

/// The characters and distinct substitution characters of the last input the strength
/// estimate read on this thread, for tests that show its cost is bounded whatever the password.
pub fn last_scored() -> (usize, usize) {
    SCORED.with(std::cell::Cell::get)
}

/// zxcvbn's score (0 to 4) of the bounded [`scoring_input`] of `password`.
fn estimate(password: &str, user_inputs: &[&str]) -> u8 {
    let input = scoring_input(password);
    let mut subs: Vec<char> = input
        .chars()
        .filter(|c| SUBSTITUTIONS.contains(*c))
        .collect();
    subs.sort_unstable();
    subs.dedup();
    SCORED.with(|c| c.set((input.chars().count(), subs.len())));
    u8::from(zxcvbn::zxcvbn(input, user_inputs).score())
}

/// Checks a new password against the policy; the error names the rule that failed and never
/// the password.
pub fn check_policy(password: &str, email: &str, policy: &PasswordPolicy) -> Result<(), ApiError> {
    let fail = |message: String| {
        Err(ApiError::Validation(vec![FieldError::new(
            "password", message,
        )]))
    };
    let chars = password.chars().count();
    if chars < policy.min_chars {
        return fail(format!("must be at least {} characters", policy.min_chars));
    }
    if chars > policy.max_chars {
        return fail(format!("must be at most {} characters", policy.max_chars));
    }
    let lower = password.to_lowercase();
    let local = email.split('@').next().unwrap_or_default().to_lowercase();
    if local.chars().count() >= 3 && lower.contains(&local) {
        return fail("must not contain the email address's local part".into());
    }
    if common().contains(lower.as_str()) {
        return fail("is a commonly used password".into());
    }
    let score = estimate(password, &[email, &local]);
    if score < policy.min_score {
        return fail(format!(
            "is too easy to guess (strength {score} of 4, needs {}); use a longer passphrase",
            policy.min_score
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: PasswordPolicy = PasswordPolicy {
        min_chars: 12,
        max_chars: 128,
        min_score: 3,
    };

    fn rule(password: &str, email: &str) -> Option<String> {
        match check_policy(password, email, &POLICY) {
            Ok(()) => None,
            Err(ApiError::Validation(f)) => Some(f[0].message.clone()),
            Err(e) => panic!("{e}"),
        }
    }

    /// The slowest inputs found for zxcvbn's substitution matcher: many distinct substitution
    /// characters, then length.
    pub(super) fn costly_passwords() -> Vec<String> {
        let subs = SUBSTITUTIONS;
        vec![
            format!("{subs}{}", "a".repeat(108)),
            subs.chars().cycle().take(128).collect(),
            subs.chars().rev().cycle().take(128).collect(),
            format!("1|7!1|7!{}", "a".repeat(120)),
        ]
    }

    #[test]
    fn given_costly_passwords_when_checking_then_the_estimate_reads_a_bounded_input() {
        for p in costly_passwords() {
            assert!(
                check_policy(&p, "someone@example.com", &POLICY).is_err(),
                "judged by its first few characters: {p}"
            );
            let (chars, subs) = last_scored();
            assert!(chars <= SCORED_CHARS, "{chars} characters scored");
            assert!(subs <= SCORED_SUBSTITUTIONS, "{subs} substitutions scored");
        }
    }

    #[test]
    fn given_the_scoring_input_when_bounded_then_it_is_a_prefix_up_to_the_seventh_substitution() {
        assert_eq!(scoring_input(&costly_passwords()[0]), "4@8({[");
        assert_eq!(scoring_input("password12345678"), "password123456");
        for ordinary in [
            "correct horse battery staple",
            "x7$Kp!2@Lm9#",
            "Tr0ub4dor&3",
            "hK8$wq2!Rz9@",
        ] {
            assert_eq!(scoring_input(ordinary), ordinary, "read whole");
        }
        let long = "q".repeat(200);
        assert_eq!(scoring_input(&long).len(), SCORED_CHARS);
        let wide = format!("{}{}", "é".repeat(45), "x");
        assert_eq!(
            scoring_input(&wide).chars().count(),
            SCORED_CHARS,
            "characters, not bytes"
        );
    }

    #[test]
    fn given_weak_passwords_with_many_digits_or_symbols_when_checking_then_still_refused() {
        for weak in [
            "1234567890ab",
            "1234567890!@",
            "password12345678",
            "iloveyou1234567",
            "!@#$%12345678",
            "abc123!@#$%^",
            "aaaaaa123456789",
            "11223344556677",
            "P@ssw0rd1234",
        ] {
            assert!(
                check_policy(weak, "someone@example.com", &POLICY).is_err(),
                "{weak} must be refused"
            );
        }
        for strong in [
            "violet quasar mangrove tundra 71!",
            "x7$Kp!2@Lm9#",
            "hK8$wq2!Rz9@pL4mN7#v",
        ] {
            assert!(
                check_policy(strong, "someone@example.com", &POLICY).is_ok(),
                "{strong} must be accepted"
            );
        }
    }

    #[test]
    fn given_weak_passwords_when_checking_then_the_failed_rule_is_named() {
        assert!(rule("short", "a@b.example").is_some_and(|m| m.contains("at least 12")));
        assert!(rule(&"x".repeat(129), "a@b.example").is_some_and(|m| m.contains("at most 128")));
        assert!(rule("qwerty123456", "a@b.example").is_some_and(|m| m.contains("commonly used")));
        assert!(rule("aaaaaaaaaaaaaaa", "a@b.example").is_some_and(|m| m.contains("too easy")));
        assert!(
            rule("alice-Tr0ub4dor&3-horse", "alice@b.example")
                .is_some_and(|m| m.contains("local part"))
        );
        let msg = rule("qwerty123456", "a@b.example").unwrap_or_default();
        assert!(!msg.contains("qwerty"));
    }

    #[test]
    fn given_a_strong_passphrase_when_checking_then_accepted_without_composition_rules() {
        assert_eq!(
            rule("correct horse battery staple vortex", "a@b.example"),
            None
        );
        assert_eq!(
            rule(&"long unusual phrase ".repeat(6)[..120], "a@b.example"),
            None
        );
    }

    #[test]
    fn given_a_hash_when_verifying_then_only_the_password_matches() {
        let h = hash("correct horse battery staple").expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify("correct horse battery staple", Some(&h)));
        assert!(!verify("correct horse battery stapl", Some(&h)));
        assert!(!verify("anything", None));
        assert!(!needs_rehash(&h));
        let weak = "$argon2id$v=19$m=4096,t=1,p=1$c2FsdHNhbHRzYWx0$6Qx0d3+5fK7yQm8oB4d5tH2Q0b4Qk1oYp6l2m2Yq9b0";
        assert!(needs_rehash(weak));
    }

    #[test]
    fn given_unknown_and_known_accounts_when_verifying_then_both_do_one_argon2_operation() {
        let h = hash("correct horse battery staple").expect("hash");
        let before = operations();
        verify("guess", Some(&h));
        verify("guess", None);
        let after = operations();
        assert_eq!(after - before, 2);
    }

    #[test]
    fn given_the_dummy_hash_when_parsed_then_it_uses_the_current_parameters() {
        assert!(
            !needs_rehash(DUMMY_HASH),
            "the dummy must cost what a real verification costs"
        );
    }

    fn phc(algorithm: Algorithm, m: u32, t: u32, p: u32) -> String {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::new(
            algorithm,
            Version::V0x13,
            Params::new(m, t, p, None).expect("params"),
        )
        .hash_password(b"correct horse battery staple", &salt)
        .expect("hash")
        .to_string()
    }

    #[test]
    fn given_stored_hashes_when_checking_for_rehash_then_only_weaker_ones_are_replaced() {
        let (m, t, p) = (MEMORY_KIB, ITERATIONS, PARALLELISM);
        assert!(!needs_rehash(
            &hash("correct horse battery staple").expect("hash")
        ));
        for (what, stored) in [
            ("less memory", phc(Algorithm::Argon2id, m / 2, t, p)),
            ("fewer iterations", phc(Algorithm::Argon2id, m, t - 1, p)),
            ("Argon2i", phc(Algorithm::Argon2i, m, t, p)),
            (
                "not a PHC string",
                "$2b$12$abcdefghijklmnopqrstuv".to_string(),
            ),
        ] {
            assert!(needs_rehash(&stored), "{what} must be rehashed");
        }
        for (what, stored) in [
            ("more memory", phc(Algorithm::Argon2id, m * 2, t, p)),
            ("more iterations", phc(Algorithm::Argon2id, m, t + 1, p)),
            ("more lanes", phc(Algorithm::Argon2id, m, t, p + 1)),
        ] {
            assert!(!needs_rehash(&stored), "{what} is kept");
        }
        let current = hash("x").expect("hash");
        assert!(
            current.starts_with(&format!("$argon2id$v=19$m={m},t={t},p={p}$")),
            "{current}"
        );
    }

    #[test]
    fn given_a_password_at_the_policy_bounds_when_checking_then_accepted() {
        let long = "correct horse battery staple ".repeat(5);
        let exact: String = long.chars().take(POLICY.max_chars).collect();
        assert!(check_policy(&exact, "alice@example.com", &POLICY).is_ok());
        let over: String = long.chars().take(POLICY.max_chars + 1).collect();
        assert!(check_policy(&over, "alice@example.com", &POLICY).is_err());
        let phrase = "velvet orbit canyon lantern";
        let score = u8::from(zxcvbn::zxcvbn(phrase, &["alice@example.com", "alice"]).score());
        let at_score = PasswordPolicy {
            min_score: score,
            ..POLICY
        };
        assert!(check_policy(phrase, "alice@example.com", &at_score).is_ok());
        let above = PasswordPolicy {
            min_score: score + 1,
            ..POLICY
        };
        assert!(score == 4 || check_policy(phrase, "alice@example.com", &above).is_err());
    }
}
