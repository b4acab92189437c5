//! `hoard ca fingerprint` and `hoard ca renew`: the CA's fingerprint, which a setup script's
//! `--ca-sha256` checks, and a new CA (a new key) that the next start uses.

use std::io::Write;

use super::{OpsError, Outcome};
use crate::config::Config;
use crate::error::Chain;

/// Prints `sha256:<hex>` of `ca.crt`'s DER. Without a CA, says so on `err` and creates nothing.
pub fn fingerprint(
    config: &Config,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<Outcome, OpsError> {
    let found = crate::tls::fingerprint_of(&config.ca.dir)
        .map_err(|error| OpsError::Ca(Chain(&error).to_string()))?;
    let Some(fingerprint) = found else {
        writeln!(
            err,
            "hoard: no CA in {} (hoard serve creates one at its first start)",
            config.ca.dir.display()
        )?;
        return Ok(Outcome::Trouble);
    };
    writeln!(out, "{fingerprint}")?;
    Ok(Outcome::Done)
}

/// Writes a new CA for the config's intercepted hosts and mirror names (when
/// `ca.name_constraints` is on) and prints its fingerprint. A running hoard keeps its CA until
/// it restarts; clients need the new `ca.crt` then.
pub fn renew(config: &Config, out: &mut impl Write) -> Result<Outcome, OpsError> {
    let fingerprint = crate::tls::renew(&config.ca.dir, config.ca_constraints())
        .map_err(|error| OpsError::Ca(Chain(&error).to_string()))?;
    writeln!(out, "{fingerprint}")?;
    Ok(Outcome::Done)
}
