//! `hoard cache rm`: removes images. For `repo:tag`, the tag file and the manifests it points
//! at; for `repo@digest`, that manifest and the tag files of the repository pointing at it. An
//! index takes its platform manifests with it, and every removed manifest takes the blobs that
//! no other stored manifest uses. A manifest still named by another tag, or listed by another
//! stored index, is kept (and said so).

use std::collections::{HashMap, HashSet};
use std::io::Write;

use indicatif::HumanBytes;

use crate::oci::Digest;
use crate::ops::disk::{
    CacheDir, Guard, Kind, ManifestFile, Removal, TagFile, remove_if_unchanged,
};
use crate::ops::imageref::ImageRef;
use crate::ops::{OpsError, Outcome};

/// Removes each image in turn, printing what went. Images not in the cache are reported on
/// `err` and make the outcome [`Outcome::Trouble`].
pub fn run(
    dir: &CacheDir,
    images: &[ImageRef],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Outcome, OpsError> {
    let mut unknown = false;
    for image in images {
        if !remove_image(dir, image, out)? {
            writeln!(err, "hoard: {image} is not in the cache")?;
            unknown = true;
        }
    }
    Ok(Outcome::from_trouble(unknown))
}

/// What one removal takes and keeps.
#[derive(Debug, Default)]
struct Plan {
    tags: Vec<TagFile>,
    manifests: HashSet<Digest>,
    /// Manifests that stay, and why.
    kept: HashMap<Digest, String>,
    blobs: HashSet<Digest>,
    shared_blobs: usize,
}

/// Removes one image; `false` if the cache knows nothing of it.
fn remove_image(dir: &CacheDir, image: &ImageRef, out: &mut dyn Write) -> Result<bool, OpsError> {
    let stored: HashMap<Digest, ManifestFile> = dir
        .entries(Kind::Manifest)?
        .into_iter()
        .filter_map(|e| Some((e.digest.clone(), dir.manifest(&e.digest)?)))
        .collect();
    let Some(plan) = plan(dir.tags()?, &stored, image) else {
        return Ok(false);
    };
    let (mut files, mut freed) = (0u64, 0u64);
    let mut remove = |what: String, path: &std::path::Path, meta: &std::fs::Metadata| {
        // Only this file is checked: hoard may serve (and touch) it until the last moment.
        if remove_if_unchanged(path, meta, Guard::SameFile)? == Removal::Removed {
            files += 1;
            freed += meta.len();
            writeln!(out, "removed {what}")?;
        }
        Ok::<_, OpsError>(())
    };
    for tag in &plan.tags {
        remove(format!("tag {}", tag.name()), &tag.path, &tag.meta)?;
    }
    for (kind, digests) in [(Kind::Manifest, &plan.manifests), (Kind::Blob, &plan.blobs)] {
        for digest in sorted(digests.iter()) {
            if let Some(entry) = dir.entry(kind, digest) {
                let what = format!("{} {digest} ({})", kind.as_str(), HumanBytes(entry.size()));
                remove(what, &entry.path, &entry.meta)?;
            }
        }
    }
    let mut kept: Vec<(&Digest, &String)> = plan.kept.iter().collect();
    kept.sort_by(|a, b| a.0.cmp(b.0));
    for (digest, why) in kept {
        writeln!(out, "kept manifest {digest} ({why})")?;
    }
    if plan.shared_blobs > 0 {
        writeln!(out, "kept {} blobs used by other images", plan.shared_blobs)?;
    }
    writeln!(
        out,
        "{image}: removed {files} files, freed {}",
        HumanBytes(freed)
    )?;
    Ok(true)
}

/// Digests in a stable order for the report.
fn sorted<'a>(digests: impl Iterator<Item = &'a Digest>) -> Vec<&'a Digest> {
    let mut digests: Vec<&Digest> = digests.collect();
    digests.sort();
    digests
}

/// Works out what removing `image` takes; `None` if nothing in the cache is that image.
fn plan(
    tags: Vec<TagFile>,
    stored: &HashMap<Digest, ManifestFile>,
    image: &ImageRef,
) -> Option<Plan> {
    let same_repo = |t: &TagFile| t.registry == image.registry && t.repository == image.repository;
    let (doomed_tags, others): (Vec<TagFile>, Vec<TagFile>) =
        tags.into_iter().partition(|t| match &image.digest {
            Some(digest) => same_repo(t) && t.points_at(digest),
            None => same_repo(t) && Some(&t.tag) == image.tag.as_ref(),
        });
    let roots: Vec<Digest> = match &image.digest {
        Some(digest) => vec![digest.clone()],
        None => doomed_tags
            .iter()
            .flat_map(|t| t.lines.iter().map(|l| l.digest.clone()))
            .collect(),
    };
    if doomed_tags.is_empty() && !roots.iter().any(|d| stored.contains_key(d)) {
        return None;
    }

    // The roots, and the platform manifests of those that are indexes.
    let mut doomed: HashSet<Digest> = HashSet::new();
    for root in roots.iter().filter(|d| stored.contains_key(*d)) {
        doomed.insert(root.clone());
        if let Some(index) = stored.get(root).filter(|m| m.is_index()) {
            doomed.extend(index.doc.children().filter(|c| stored.contains_key(c)));
        }
    }
    // Keep what other tags name or other stored indexes list, until nothing changes (a kept
    // index keeps its platform manifests).
    let mut kept = HashMap::new();
    for tag in &others {
        for line in tag.lines.iter().filter(|l| doomed.contains(&l.digest)) {
            kept.insert(line.digest.clone(), format!("still tagged {}", tag.name()));
        }
    }
    loop {
        doomed.retain(|d| !kept.contains_key(d));
        let before = kept.len();
        for (digest, manifest) in stored.iter().filter(|(d, _)| !doomed.contains(*d)) {
            for child in manifest.doc.children().filter(|c| doomed.contains(c)) {
                kept.insert(child, format!("listed by index {digest}"));
            }
        }
        if kept.len() == before {
            break;
        }
    }
    kept.retain(|d, _| stored.contains_key(d));

    // Blobs of the doomed manifests that no remaining stored manifest uses.
    let blobs_of = |digests: &mut dyn Iterator<Item = &ManifestFile>| -> HashSet<Digest> {
        digests
            .flat_map(|m| m.doc.blobs().map(|(d, _)| d))
            .collect()
    };
    let used_elsewhere = blobs_of(
        &mut stored
            .iter()
            .filter(|(d, _)| !doomed.contains(*d))
            .map(|(_, m)| m),
    );
    let mut blobs = blobs_of(&mut doomed.iter().filter_map(|d| stored.get(d)));
    let before = blobs.len();
    blobs.retain(|d| !used_elsewhere.contains(d));
    Some(Plan {
        shared_blobs: before - blobs.len(),
        tags: doomed_tags,
        manifests: doomed,
        kept,
        blobs,
    })
}
