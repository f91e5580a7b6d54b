//! `escape_key` in `config.yaml`: the key that opens an interactive run's
//! escape menu (issue 12), e.g. `ctrl-/` (the default), `ctrl-]`,
//! `ctrl-a`. Each is known by its legacy byte and by its kitty-keyboard
//! code point, since a program may turn the kitty protocol on.

use std::fmt;

use serde::de::Deserializer;
use serde::{Deserialize, Serialize};

use super::values;

/// A Ctrl chord that opens the escape menu.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EscapeKey {
    /// The key pressed with Ctrl (`/`, `]`, `\`, `a`–`z`).
    key: char,
}

impl Default for EscapeKey {
    fn default() -> Self {
        EscapeKey { key: '/' }
    }
}

impl EscapeKey {
    /// The byte a terminal sends for the chord without the kitty protocol.
    pub fn byte(&self) -> u8 {
        match self.key {
            '/' => 0x1f,
            ']' => 0x1d,
            '\\' => 0x1c,
            letter => (letter as u8) & 0x1f,
        }
    }

    /// The key's code point in the kitty protocol (`CSI code;5u`).
    pub fn kitty_code(&self) -> u32 {
        u32::from(self.key)
    }

    /// How to name it to the user, e.g. `Ctrl-/`.
    pub fn label(&self) -> String {
        format!("Ctrl-{}", self.key)
    }
}

impl std::str::FromStr for EscapeKey {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let invalid = || format!("invalid escape key {text:?}: expected ctrl-/, ctrl-], ctrl-\\ or ctrl-a … ctrl-z");
        let lower = text.trim().to_ascii_lowercase();
        let key = lower.strip_prefix("ctrl-").ok_or_else(invalid)?;
        let mut chars = key.chars();
        match (chars.next(), chars.next()) {
            (Some(key @ ('/' | ']' | '\\' | 'a'..='z')), None) => Ok(EscapeKey { key }),
            _ => Err(invalid()),
        }
    }
}

impl fmt::Display for EscapeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ctrl-{}", self.key)
    }
}

impl Serialize for EscapeKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        values::display(self, s)
    }
}

impl<'de> Deserialize<'de> for EscapeKey {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        values::parse_str(de, "a key like ctrl-/", str::parse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_to_their_byte_and_kitty_code() {
        let default = EscapeKey::default();
        assert_eq!((default.byte(), default.kitty_code()), (0x1f, 47));
        let bracket: EscapeKey = "ctrl-]".parse().unwrap();
        assert_eq!((bracket.byte(), bracket.kitty_code()), (0x1d, 93));
        let a: EscapeKey = "Ctrl-A".parse().unwrap();
        assert_eq!(
            (a.byte(), a.kitty_code(), a.to_string()),
            (0x01, 97, "ctrl-a".to_string())
        );
        for bad in ["/", "ctrl-", "ctrl-ab", "alt-x", "ctrl-1"] {
            assert!(bad.parse::<EscapeKey>().is_err(), "{bad}");
        }
    }
}
