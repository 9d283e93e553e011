//! `coffer upgrade` with its key: a format-1 store's master key through the chain, its
//! recovery record settled (resealed to a certificate the administrator names, or dropped),
//! the store upgraded in place (store::upgrade), and the whole audited.

use std::path::Path;

use super::recovery::seal as seal_recovery;
use super::{Chain, KeyError, Target};
use crate::crypto::{MasterKey, PublicKey};
use crate::store::upgrade::{RecoveryPlan, UpgradeReport};
use crate::store::{self, Descriptor};

/// What to do with the store's recovery record.
pub enum Recovery<'a> {
    /// There must be none.
    Refuse,
    Drop,
    /// Seal afresh to this certificate (its key and PEM).
    Reseal(&'a PublicKey, &'a str),
}

/// Upgrade the store at `root` to format 2.
pub fn upgrade(
    chain: &Chain,
    root: &Path,
    recovery: Recovery<'_>,
    progress: &crate::progress::Progress,
) -> Result<UpgradeReport, KeyError> {
    let desc = Descriptor::load(root)?;
    super::unlock::check_format(chain, &desc)?;
    let master = chain.master(&Target::current(&desc))?;
    let audit = chain.audit()?;
    let plan = match recovery {
        Recovery::Reseal(pk, pem) => RecoveryPlan::Reseal(
            pk.fingerprint()?,
            Box::new(|d: &Descriptor, m: &MasterKey| {
                seal_recovery(d, m, pk, pem, &audit)
                    .map(Some)
                    .map_err(|e| e.into())
            }),
        ),
        Recovery::Drop => RecoveryPlan::Drop,
        Recovery::Refuse => RecoveryPlan::Refuse,
    };
    let report = store::upgrade::upgrade(root, &master, plan, progress)?;
    if !report.already {
        super::unlock::remember_format(chain, &Descriptor::load(root)?);
    }
    audit.record(
        "upgrade",
        Some(&desc.current_master().key_id),
        Some(&desc.store_id),
        if report.already {
            "already-present"
        } else {
            "ok"
        },
        Some(&format!(
            "from format {}: {} batches adopted, {} refused, {} inode records",
            report.from,
            report.batches,
            report.refused.len(),
            report.entries
        )),
    )?;
    Ok(report)
}
