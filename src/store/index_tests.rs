//! Tests of the index: eviction order, pins, byte accounting, sweeps.

use super::*;
use crate::oci::Digest;

fn key(n: u32) -> Key {
    Key::Manifest(Digest::sha256_of(&n.to_le_bytes()))
}

/// Checks the sums against the entries themselves.
fn assert_accounting(index: &Index) {
    let total: u64 = index.entries.iter().map(|e| e.size).sum();
    let reading: u64 = index
        .entries
        .iter()
        .filter(|e| e.readers() > 0)
        .map(|e| e.size)
        .sum();
    assert_eq!(index.bytes, total, "bytes");
    assert_eq!(index.reading_bytes, reading, "bytes being read");
    assert_eq!(index.idle.len() + index.reading.len(), index.entries.len());
    assert!(index.entries.iter().all(|e| {
        let order = if e.readers() > 0 {
            &index.reading
        } else {
            &index.idle
        };
        order.contains_key(&e.stamp())
    }));
}

#[test]
fn entries_being_read_are_not_in_the_eviction_order_and_return_to_their_place() {
    let mut index = Index::new();
    // 9,000 entries are read for a long time, and so become the least recently used.
    let mut pins = Vec::new();
    for n in 0..9_000 {
        index.insert(key(n), 10);
        pins.push((n, index.pin(&key(n)).map(|p| p.id)));
    }
    for n in 9_000..10_000 {
        index.insert(key(n), 10);
    }
    assert_eq!(index.evictable_bytes(), 10_000);
    // Each victim is one step: the entries being read are not in the way.
    let victims = index.evict(30);
    assert_eq!(victims, [key(9_000), key(9_001), key(9_002)]);
    assert_eq!(index.idle.len(), 997, "only idle entries were looked at");
    assert_eq!(index.reading.len(), 9_000);
    assert_eq!(index.evictable_bytes(), 9_970);
    assert_accounting(&index);

    // Once read, they are idle again at the place their last use gave them: before 9,003.
    for (n, id) in pins {
        index.unpin(&key(n), id.unwrap_or_else(|| panic!("{n} was not pinned")));
    }
    assert_eq!(index.evict(20), [key(0), key(1)]);
    assert_eq!(index.len(), 9_995);
    assert_accounting(&index);
}

#[test]
fn an_entry_is_evictable_only_once_its_last_reader_leaves() {
    let mut index = Index::new();
    index.insert(key(1), 100);
    index.insert(key(2), 100);
    let first = index.pin(&key(1)).map(|p| p.id).unwrap_or_default();
    let second = index.pin(&key(1)).map(|p| p.id).unwrap_or_default();
    assert_eq!(index.evict(u64::MAX), [key(2)], "1 is being read");
    assert_eq!(index.evict(u64::MAX), Vec::<Key>::new());
    index.unpin(&key(1), first);
    assert_eq!(index.evictable_bytes(), 0, "one reader is left");
    index.unpin(&key(1), second);
    assert_eq!(index.evictable_bytes(), 100);
    assert_eq!(index.evict(1), [key(1)]);
    assert_eq!((index.len(), index.bytes()), (0, 0));
    assert_accounting(&index);
}

#[test]
fn byte_accounting_is_exact_through_replacements_and_removals_while_read() {
    let mut index = Index::new();
    index.insert(key(1), 100);
    index.insert(key(2), 200);
    let old = index.pin(&key(1)).map(|p| p.id).unwrap_or_default();
    assert_eq!(index.evictable_bytes(), 200);
    // Stored again while read: the new entry has no readers, and the old pin no say.
    index.insert(key(1), 50);
    assert_eq!((index.bytes(), index.evictable_bytes()), (250, 250));
    index.unpin(&key(1), old);
    assert_eq!((index.bytes(), index.evictable_bytes()), (250, 250));
    assert_accounting(&index);

    // Removed (its file gone) while read.
    let pin = index.pin(&key(2)).map(|p| p.id).unwrap_or_default();
    assert_eq!(index.remove(&key(2)), Some(200));
    index.unpin(&key(2), pin);
    assert_eq!((index.bytes(), index.evictable_bytes()), (50, 50));
    assert_eq!(index.remove(&key(2)), None);
    assert!(
        !index.insert_cold(key(1), 7),
        "known keys are not added again"
    );
    assert_eq!(index.size_of(&key(1)), Some(50));
    assert_accounting(&index);
}

#[test]
fn entries_found_later_are_the_least_recently_used() {
    let mut index = Index::new();
    index.insert(key(1), 10);
    assert!(index.insert_cold(key(2), 10));
    assert!(index.insert_cold(key(3), 10));
    index.insert(key(4), 10);
    assert_eq!(index.evict(40), [key(3), key(2), key(1), key(4)]);
    assert_accounting(&index);
}

#[test]
fn a_sweep_in_batches_looks_at_every_entry_read_or_not() {
    let mut index = Index::new();
    for n in 0..2_500 {
        index.insert(key(n), 1);
    }
    let _pins: Vec<_> = (0..2_500).step_by(7).map(|n| index.pin(&key(n))).collect();
    let odd: std::collections::HashSet<Key> = (0..2_500).filter(|n| n % 2 == 1).map(key).collect();
    let mut at = Some(Sweep::default());
    let mut batches = 0;
    while let Some(from) = at {
        batches += 1;
        at = index.sweep(from, 100, |k, _| !odd.contains(k));
    }
    assert!(batches <= 2_500 / 100 + 3, "{batches} batches");
    assert_eq!(index.len(), 1_250);
    assert!(odd.iter().all(|k| index.contains(k)));
    assert_accounting(&index);
}

#[test]
fn kept_entries_are_never_evicted_until_they_are_let_go() {
    let mut index = Index::new();
    index.keep([key(1), key(3)].into_iter().collect());
    for n in 0..4 {
        index.insert(key(n), 10);
    }
    assert_eq!(index.evictable_bytes(), 20);
    let pinned = index.pin(&key(1)).map(|p| p.id);
    assert_eq!(index.evict(40), vec![key(0), key(2)]);
    assert_accounting(&index);
    // A read of a kept entry ends; it stays kept.
    if let Some(id) = pinned {
        index.unpin(&key(1), id);
    }
    assert!(index.evict(10).is_empty());
    // Replaced while kept: still kept.
    index.insert(key(3), 15);
    assert!(index.evict(10).is_empty());
    index.keep([key(3)].into_iter().collect());
    assert_accounting(&index);
    assert_eq!(index.evict(100), vec![key(1)]);
    index.keep(HashSet::new());
    assert_eq!(index.evict(100), vec![key(3)]);
    assert_accounting(&index);
    assert_eq!(index.bytes(), 0);
}

#[test]
fn an_index_built_at_start_evicts_in_the_order_given() {
    let files = (0..1_000).map(|n| (key(n), 10)).chain([(key(5), 30)]);
    let mut index = Index::of_files(files.collect::<Vec<_>>().into_iter());
    assert_eq!(index.len(), 1_000);
    assert_eq!(index.bytes(), 10_020, "the later of the two key(5) stays");
    assert_accounting(&index);
    assert_eq!(index.evict(40), [key(0), key(1), key(2), key(3)]);
    assert_eq!(index.evict(10), [key(4)]);
    assert_eq!(index.evict(10), [key(6)], "key(5) was found last");
    index.insert(key(2_000), 10);
    assert_eq!(index.evict(9_930), (7..1_000).map(key).collect::<Vec<_>>());
    assert_eq!(index.evict(30), [key(5)]);
    assert_eq!(index.evict(10), [key(2_000)]);
    assert_accounting(&index);
}

#[test]
fn a_node_fits_jemallocs_80_byte_class_with_its_arc_counts() {
    assert!(std::mem::size_of::<Node>() + 16 <= 80);
}
