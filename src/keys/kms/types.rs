//! What coffer and a KMS say about a key, shared by the client (which asks) and the reading
//! of answers (answer.rs): coffer's labels and the namespaces that carry them, the object
//! group, a key's lifecycle state, and what a Get Attributes tells.

/// Application Specific Information namespaces that carry coffer's attributes (PyKMIP refuses
/// custom `x-` attributes, and ASI is standard KMIP 1.0: every KMS keeps and searches it).
pub const NS_STORE: &str = "x-store-id";
pub const NS_POLICY: &str = "x-policy";
pub const NS_COPY: &str = "x-copy";
pub const NS_VERSION: &str = "x-key-version";
/// Object Group of every key coffer creates, so an operator can list them from the console.
pub const GROUP: &str = "coffer";
/// Encrypt | Decrypt | Wrap Key | Unwrap Key (KMIP 1.0, 9.1.3.3.1).
pub const USAGE_MASK: i32 = 0x04 | 0x08 | 0x10 | 0x20;

/// What coffer records with a master key in the KMS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLabels {
    pub store_id: String,
    pub version: u32,
    pub policy: Option<String>,
    pub copy: Option<String>,
}

impl KeyLabels {
    /// The key's Name: unique per store and version, readable in a KMS console.
    pub fn name(&self) -> String {
        format!("coffer-{}-v{}", self.store_id, self.version)
    }
}

/// The lifecycle state of a managed object (KMIP 1.0, 3.17).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    PreActive,
    Active,
    Deactivated,
    Compromised,
    Destroyed,
    DestroyedCompromised,
    /// A state of a later KMIP version than this client knows.
    Unknown,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::PreActive => "pre-active",
            KeyState::Active => "active",
            KeyState::Deactivated => "deactivated",
            KeyState::Compromised => "compromised",
            KeyState::Destroyed => "destroyed",
            KeyState::DestroyedCompromised => "destroyed (compromised)",
            KeyState::Unknown => "in a state coffer does not know",
        }
    }
}

/// One key as the KMS describes it: its state and the labels coffer gave it.
#[derive(Clone, Debug)]
pub struct KeyInfo {
    pub uid: String,
    pub state: KeyState,
    pub name: Option<String>,
    pub store_id: Option<String>,
    pub version: Option<u32>,
    pub policy: Option<String>,
    pub copy: Option<String>,
}
