//! Secret values (client secrets, tokens, device codes): redacted in Debug, no Display, zeroized on drop.

use secrecy::{ExposeSecret, SecretString};

/// A secret string. `Debug` prints `Secret(****)`; there is deliberately no `Display`,
/// so a secret cannot end up in a `format!` or an error message by accident.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(SecretString::from(value.into()))
    }

    /// The raw value. Call it at the last moment (a form field, a keychain write).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }

    /// The first three characters, as Graph's `hint` shows them. Never more.
    pub fn hint(&self) -> String {
        self.expose().chars().take(3).collect()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(****)")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("abc8Q~very-secret-value");
        let shown = format!("{s:?} {:#?}", Some(&s));
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(shown.contains("****"));
        assert_eq!(s.hint(), "abc");
    }
}
