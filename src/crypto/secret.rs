//! Zeroizing 256-bit key newtypes. None derives Debug, Copy or Clone: a copy of a key is made
//! on purpose, with `duplicate`, and every copy is wiped when dropped.

use zeroize::{Zeroize, ZeroizeOnDrop};

/// A 256-bit secret that is wiped on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Secret32([u8; 32]);

impl Secret32 {
    pub fn random() -> Self {
        let mut k = [0u8; 32];
        super::random_bytes(&mut k);
        Secret32(k)
    }
    pub fn from_array(bytes: [u8; 32]) -> Self {
        Secret32(bytes)
    }
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(Secret32(arr))
    }
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
    pub fn duplicate(&self) -> Self {
        Secret32(self.0)
    }
}

impl std::fmt::Debug for Secret32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret32(<redacted>)")
    }
}

macro_rules! key_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name(Secret32);
        impl $name {
            pub fn random() -> Self { $name(Secret32::random()) }
            pub fn from_secret(s: Secret32) -> Self { $name(s) }
            pub fn from_slice(b: &[u8]) -> Option<Self> { Secret32::from_slice(b).map($name) }
            pub fn expose(&self) -> &[u8; 32] { self.0.expose() }
            pub fn secret(&self) -> &Secret32 { &self.0 }
            pub fn duplicate(&self) -> Self { $name(self.0.duplicate()) }
        }
        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }
    };
}

key_type!(
    /// One per file; encrypts that file's blocks.
    FileKey
);
key_type!(
    /// One per writer session (or per N files); wraps file keys. RSA-wrapped in the catalog.
    BatchKey
);
key_type!(
    /// One per store and version; held by a key provider, never written to the store.
    MasterKey
);
key_type!(
    /// Encrypts file names and symlink targets; wrapped by the master key on its own.
    NameKey
);
key_type!(
    /// One per store (format 2): proves that a batch of new files was made by a writer the
    /// key holders trust. Sealed in the descriptor under the master key, carried by backup
    /// credentials; a host that holds only the store's bytes and its public key lacks it.
    WriteKey
);
key_type!(
    /// Derived from the keystore passphrase with Argon2id; wraps the master keys at rest.
    KeystoreKey
);
