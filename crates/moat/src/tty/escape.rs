//! The escape prefix in the keystrokes going to an interactive run (issue
//! 12): the configured Ctrl chord, as its legacy byte or its kitty-keyboard
//! encoding (`CSI 47;5u` for Ctrl-/; release and repeat events of it are
//! swallowed), opens a one-line menu; the next key chooses. Everything else
//! passes through untouched and undelayed: a sequence is recognised only
//! when it arrives whole in one read, as terminals send it.

use moat_core::config::EscapeKey;

/// What the user chose in the menu.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    Detach,
    Stop,
    Redraw,
    /// The prefix itself goes to the program.
    SendPrefix,
    /// Any other key: back to the program, the key dropped.
    Dismiss,
}

/// What to do with a read of keystrokes, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Send(Vec<u8>),
    OpenMenu,
    Chose(Choice),
}

/// Finds the prefix in keystrokes; remembers whether the menu is open.
pub struct EscapeScanner {
    key: EscapeKey,
    menu_open: bool,
    /// The kitty code of the key that chose in the menu: its release (and
    /// repeats) belong to the menu too, not to the program.
    chosen_with: Option<u32>,
}

/// Kitty key event types (`CSI code;mods:event u`).
const PRESS: u32 = 1;

/// One kitty-encoded key: code point, modifiers (1 + bits), event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct KittyKey {
    code: u32,
    modifiers: u32,
    event: u32,
}

const CTRL_MODIFIERS: u32 = 5;

impl EscapeScanner {
    pub fn new(key: EscapeKey) -> Self {
        EscapeScanner {
            key,
            menu_open: false,
            chosen_with: None,
        }
    }

    /// The bytes that send the prefix itself to the program.
    pub fn prefix_bytes(&self) -> Vec<u8> {
        vec![self.key.byte()]
    }

    pub fn feed(&mut self, input: &[u8]) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut pending = Vec::new();
        let mut at = 0;
        while at < input.len() {
            let (key, used) = next_key(&input[at..]);
            let chunk = &input[at..at + used];
            at += used;
            if self.menu_open {
                if let Some(choice) = self.choose(key, chunk) {
                    self.menu_open = false;
                    self.chosen_with = key.map(|key| key.code);
                    actions.push(Action::Chose(choice));
                }
                continue;
            }
            if let (Some(key), Some(code)) = (key, self.chosen_with)
                && key.code == code
                && key.event != PRESS
            {
                continue;
            }
            self.chosen_with = None;
            match self.prefix_event(key, chunk) {
                Some(true) => {
                    flush(&mut pending, &mut actions);
                    self.menu_open = true;
                    actions.push(Action::OpenMenu);
                }
                Some(false) => {} // the prefix's release or repeat: swallowed
                None => pending.extend_from_slice(chunk),
            }
        }
        flush(&mut pending, &mut actions);
        actions
    }

    /// `Some(true)` for a press of the prefix, `Some(false)` for its
    /// release or repeat, `None` for anything else.
    fn prefix_event(&self, key: Option<KittyKey>, chunk: &[u8]) -> Option<bool> {
        if chunk == [self.key.byte()] {
            return Some(true);
        }
        let key = key?;
        (key.code == self.key.kitty_code() && key.modifiers == CTRL_MODIFIERS).then_some(key.event == PRESS)
    }

    /// The menu's reading of one key (`None`: a release event, still open).
    fn choose(&self, key: Option<KittyKey>, chunk: &[u8]) -> Option<Choice> {
        if let Some(prefix) = self.prefix_event(key, chunk) {
            return prefix.then_some(Choice::SendPrefix);
        }
        let letter = match key {
            Some(key) if key.event != PRESS => return None,
            Some(key) if key.modifiers <= 1 => char::from_u32(key.code),
            Some(_) => None,
            None => (chunk.len() == 1).then(|| char::from(chunk[0])),
        };
        Some(match letter {
            Some('d') => Choice::Detach,
            Some('k') => Choice::Stop,
            Some('r') => Choice::Redraw,
            _ => Choice::Dismiss,
        })
    }
}

fn flush(pending: &mut Vec<u8>, actions: &mut Vec<Action>) {
    if !pending.is_empty() {
        actions.push(Action::Send(std::mem::take(pending)));
    }
}

/// The next key in `input`: a whole kitty `CSI … u` sequence, another whole
/// CSI sequence, or one byte; and how many bytes it took.
fn next_key(input: &[u8]) -> (Option<KittyKey>, usize) {
    if input.starts_with(b"\x1b[") {
        let end = input[2..].iter().position(|b| (0x40..=0x7e).contains(b));
        if let Some(end) = end {
            let used = 2 + end + 1;
            let kitty = (input[used - 1] == b'u')
                .then(|| kitty_key(&input[2..used - 1]))
                .flatten();
            return (kitty, used);
        }
    }
    (None, 1)
}

/// Parses `code[:alternates];modifiers[:event]`.
fn kitty_key(params: &[u8]) -> Option<KittyKey> {
    let text = std::str::from_utf8(params).ok()?;
    let mut fields = text.split(';');
    let code = fields.next()?.split(':').next()?.parse().ok()?;
    let (modifiers, event) = match fields.next() {
        Some(mods) => {
            let mut parts = mods.split(':');
            let modifiers = parts.next()?.parse().ok()?;
            let event = parts.next().map(str::parse).transpose().ok()?.unwrap_or(PRESS);
            (modifiers, event)
        }
        None => (1, PRESS),
    };
    Some(KittyKey { code, modifiers, event })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanner() -> EscapeScanner {
        EscapeScanner::new(EscapeKey::default())
    }

    #[test]
    fn ordinary_keys_and_ctrl_c_pass_through_whole() {
        let mut s = scanner();
        assert_eq!(
            s.feed(b"ls -l\r\x03\x1b[A"),
            vec![Action::Send(b"ls -l\r\x03\x1b[A".to_vec())]
        );
    }

    #[test]
    fn the_legacy_prefix_opens_the_menu_and_the_next_key_chooses() {
        let mut s = scanner();
        assert_eq!(
            s.feed(b"ab\x1fd"),
            vec![
                Action::Send(b"ab".to_vec()),
                Action::OpenMenu,
                Action::Chose(Choice::Detach)
            ]
        );
        assert_eq!(s.feed(b"\x1f"), vec![Action::OpenMenu]);
        assert_eq!(s.feed(b"k"), vec![Action::Chose(Choice::Stop)]);
        assert_eq!(
            s.feed(b"\x1fr\x1f\x1f"),
            vec![
                Action::OpenMenu,
                Action::Chose(Choice::Redraw),
                Action::OpenMenu,
                Action::Chose(Choice::SendPrefix)
            ]
        );
        assert_eq!(s.feed(b"\x1fx"), vec![Action::OpenMenu, Action::Chose(Choice::Dismiss)]);
    }

    #[test]
    fn the_kitty_prefix_works_and_its_release_is_swallowed() {
        let mut s = scanner();
        assert_eq!(
            s.feed(b"\x1b[47;5u\x1b[47;5:3u"),
            vec![Action::OpenMenu],
            "press opens, release is neither sent nor a choice"
        );
        // 'd' as a kitty key (all keys as escape codes), then its release.
        assert_eq!(s.feed(b"\x1b[100u\x1b[100;1:3u"), vec![Action::Chose(Choice::Detach)]);
        assert_eq!(s.feed(b"\x1b[47;5:2u"), vec![], "a repeat of the prefix is dropped");
        // Other kitty keys go to the program.
        assert_eq!(s.feed(b"\x1b[99;5u"), vec![Action::Send(b"\x1b[99;5u".to_vec())]);
    }

    #[test]
    fn a_configured_key_replaces_ctrl_slash() {
        let mut s = EscapeScanner::new("ctrl-]".parse().unwrap());
        assert_eq!(s.feed(b"\x1f"), vec![Action::Send(vec![0x1f])]);
        assert_eq!(s.feed(b"\x1d"), vec![Action::OpenMenu]);
        assert_eq!(s.feed(b"\x1b[93;5u"), vec![Action::Chose(Choice::SendPrefix)]);
        assert_eq!(s.prefix_bytes(), vec![0x1d]);
    }
}
