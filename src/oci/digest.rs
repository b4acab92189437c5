//! Content digests (`sha256:` and `sha512:`) and the hashers that check them.

use std::fmt;

use sha2::Digest as _;

/// A content digest: `sha256:` + 64 lowercase hex, or `sha512:` + 128 lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    algorithm: Algorithm,
    /// Boxed, not a `String`: 8 bytes less in every key of the store's index.
    hex: Box<str>,
}

/// The hash functions a digest may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    /// The name used in digests and store paths.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

impl Digest {
    /// Parses a digest, accepting only the canonical form (so it is safe as a file name).
    pub fn parse(text: &str) -> Option<Digest> {
        let (algorithm, hex) = text.split_once(':')?;
        let algorithm = match algorithm {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return None,
        };
        let valid = hex.len() == algorithm.hex_len()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        valid.then(|| Digest {
            algorithm,
            hex: hex.into(),
        })
    }

    /// The sha256 digest of `bytes`.
    pub(crate) fn sha256_of(bytes: &[u8]) -> Digest {
        Digest {
            algorithm: Algorithm::Sha256,
            hex: const_hex::encode(sha2::Sha256::digest(bytes)).into(),
        }
    }

    /// The hash function.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lowercase hex part.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// A hasher for verifying content against this digest.
    pub(crate) fn hasher(&self) -> Hasher {
        match self.algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

/// Incremental hashing of content whose digest is known in advance.
#[derive(Clone, Debug)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// Feeds bytes.
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    /// Whether everything fed hashes to `expected`.
    pub fn matches(self, expected: &Digest) -> bool {
        let hex = match self {
            Hasher::Sha256(h) => const_hex::encode(h.finalize()),
            Hasher::Sha512(h) => const_hex::encode(h.finalize()),
        };
        *hex == *expected.hex
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digests_parse_only_in_canonical_form() {
        assert!(Digest::parse(&format!("sha256:{HEX}")).is_some());
        assert!(Digest::parse(&format!("sha256:{}", HEX.to_uppercase())).is_none());
        assert!(Digest::parse(&format!("sha256:{}", &HEX[1..])).is_none());
        assert!(Digest::parse(&format!("md5:{HEX}")).is_none());
        assert!(Digest::parse("sha256:../../etc/passwd").is_none());
        assert_eq!(Digest::sha256_of(b"").hex(), HEX);
    }
}
