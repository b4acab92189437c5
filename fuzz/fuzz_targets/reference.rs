//! `ImageRef::parse`, the image references operators type (`hoard warm`, `hoard cache rm`): an
//! accepted reference has valid parts and prints as a reference that parses to the same value.
#![no_main]

use hoard::ops::imageref::{ImageRef, registry_key};
use hoard::oci::{Digest, valid_repository, valid_tag};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(key) = registry_key(text) {
        assert_eq!(
            registry_key(&key).as_deref(),
            Some(key.as_str()),
            "{text:?}: key is canonical"
        );
    }
    let Ok(image) = ImageRef::parse(text) else {
        return;
    };
    assert!(valid_repository(&image.repository), "{text:?}: {image:?}");
    assert_eq!(
        registry_key(&image.registry).as_deref(),
        Some(image.registry.as_str()),
        "{text:?}: registry is a canonical key"
    );
    if let Some(tag) = &image.tag {
        assert!(valid_tag(tag), "{text:?}: tag {tag:?}");
    }
    if let Some(digest) = &image.digest {
        assert_eq!(Digest::parse(&digest.to_string()).as_ref(), Some(digest));
    }
    assert!(
        image.tag.is_some() || image.digest.is_some(),
        "{text:?}: nothing to pull"
    );
    let printed = image.to_string();
    assert_eq!(
        ImageRef::parse(&printed).as_ref(),
        Ok(&image),
        "{text:?} prints as {printed:?}, which parses differently"
    );
});
