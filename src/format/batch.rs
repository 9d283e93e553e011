//! The bytes of a batch record (`batches/<id>` and the catalog's copy).
//!
//! Format 1: the RSA-OAEP wrap of the batch key, nothing else, so anyone holding the public
//! key could make one. Format 2: `"CFB2" | wrapped_len u16 | wrapped | tag[32]`, the tag a
//! MAC under the store's write key (docs/format.md). A batch of a format-1 store that
//! `coffer upgrade` vouched for is framed `"CFBA"` instead (its tag under a context of its
//! own), so that fsck can say which batches no key holder wrote as such. This module only
//! splits and joins the bytes; the MAC is checked by the store, which holds the key.

use super::FormatError;

pub const BATCH_MAGIC: &[u8; 4] = b"CFB2";
/// The frame of a batch that an upgrade adopted from a format-1 store.
pub const ADOPTED_MAGIC: &[u8; 4] = b"CFBA";
pub const BATCH_TAG_LEN: usize = 32;
/// No record is larger: an RSA-4096 wrap (512 bytes) and the framing, with room to spare.
pub const BATCH_MAX_LEN: usize = 4096;

/// A batch record's parts.
#[derive(Debug, PartialEq, Eq)]
pub enum BatchBlob<'a> {
    /// Format 1: the wrap alone, unauthenticated.
    Bare(&'a [u8]),
    /// Format 2: the wrap and its tag; `adopted` when `coffer upgrade` vouched for it.
    Tagged {
        wrapped: &'a [u8],
        tag: &'a [u8; BATCH_TAG_LEN],
        adopted: bool,
    },
}

impl<'a> BatchBlob<'a> {
    /// Split a record. A record in the format-2 frame is `Tagged`; anything else of a size an
    /// RSA wrap can have (256 to 512 bytes, a whole number of 64-bit words) is `Bare`.
    pub fn decode(bytes: &'a [u8]) -> Result<BatchBlob<'a>, FormatError> {
        if bytes.len() > BATCH_MAX_LEN {
            return Err(FormatError::Batch);
        }
        let framed = match bytes.get(..4) {
            Some(m) if m == BATCH_MAGIC => Some(false),
            Some(m) if m == ADOPTED_MAGIC => Some(true),
            _ => None,
        };
        if let Some(adopted) = framed {
            let rest = &bytes[4..];
            if rest.len() >= 2 {
                let n = u16::from_le_bytes([rest[0], rest[1]]) as usize;
                if rest.len() == 2 + n + BATCH_TAG_LEN {
                    let (wrapped, tag) = rest[2..].split_at(n);
                    let tag = tag.try_into().map_err(|_| FormatError::Batch)?;
                    return Ok(BatchBlob::Tagged {
                        wrapped,
                        tag,
                        adopted,
                    });
                }
            }
        }
        if (256..=512).contains(&bytes.len()) && bytes.len().is_multiple_of(8) {
            return Ok(BatchBlob::Bare(bytes));
        }
        Err(FormatError::Batch)
    }

    /// The RSA wrap inside the record.
    pub fn wrapped(&self) -> &'a [u8] {
        match self {
            BatchBlob::Bare(w) => w,
            BatchBlob::Tagged { wrapped, .. } => wrapped,
        }
    }
}

/// The format-2 record of `wrapped` with `tag`.
pub fn encode_batch(wrapped: &[u8], tag: &[u8; BATCH_TAG_LEN]) -> Vec<u8> {
    frame(BATCH_MAGIC, wrapped, tag)
}

/// The record of a batch an upgrade adopted, with `tag`.
pub fn encode_adopted_batch(wrapped: &[u8], tag: &[u8; BATCH_TAG_LEN]) -> Vec<u8> {
    frame(ADOPTED_MAGIC, wrapped, tag)
}

fn frame(magic: &[u8; 4], wrapped: &[u8], tag: &[u8; BATCH_TAG_LEN]) -> Vec<u8> {
    let mut out = Vec::with_capacity(6 + wrapped.len() + BATCH_TAG_LEN);
    out.extend_from_slice(magic);
    // Callers pass RSA wraps of at most 512 bytes.
    out.extend_from_slice(&(wrapped.len().min(u16::MAX as usize) as u16).to_le_bytes());
    out.extend_from_slice(wrapped);
    out.extend_from_slice(tag);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_round_trip_and_bare_records() {
        let w = vec![7u8; 384];
        let rec = encode_batch(&w, &[9; 32]);
        assert_eq!(rec.len(), 4 + 2 + 384 + 32);
        assert_eq!(
            BatchBlob::decode(&rec),
            Ok(BatchBlob::Tagged {
                wrapped: &w,
                tag: &[9; 32],
                adopted: false,
            })
        );
        let adopted = encode_adopted_batch(&w, &[9; 32]);
        assert_eq!(
            BatchBlob::decode(&adopted),
            Ok(BatchBlob::Tagged {
                wrapped: &w,
                tag: &[9; 32],
                adopted: true,
            })
        );
        assert_eq!(BatchBlob::decode(&w), Ok(BatchBlob::Bare(&w)));
        // A frame whose length disagrees is not a tagged record, nor a bare one.
        assert_eq!(
            BatchBlob::decode(&rec[..rec.len() - 1]),
            Err(FormatError::Batch)
        );
        assert_eq!(BatchBlob::decode(&[0u8; 17]), Err(FormatError::Batch));
        assert_eq!(BatchBlob::decode(&vec![0u8; 5000]), Err(FormatError::Batch));
    }
}
