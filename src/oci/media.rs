//! Media types and `Accept` headers.

pub(crate) const DOCKER_MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Whether a client's `Accept` header values admit `media_type`. No `Accept` at all admits
/// anything, as does `*/*`; parameters such as `;q=0.5` are ignored.
pub(crate) fn accepts<'a>(accept: impl Iterator<Item = &'a str>, media_type: &str) -> bool {
    let mut any = false;
    for value in accept {
        for item in value.split(',') {
            let item = item.split(';').next().unwrap_or("").trim();
            if item.is_empty() {
                continue;
            }
            any = true;
            if item == "*/*" || item.eq_ignore_ascii_case(media_type) {
                return true;
            }
        }
    }
    !any
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_lists_are_honoured() {
        let docker = "application/vnd.docker.distribution.manifest.v2+json";
        assert!(accepts(std::iter::empty(), docker));
        assert!(accepts(["application/json, */*;q=0.1"].into_iter(), docker));
        assert!(accepts([docker].into_iter(), docker));
        assert!(!accepts(
            ["application/vnd.oci.image.index.v1+json"].into_iter(),
            docker
        ));
    }
}
