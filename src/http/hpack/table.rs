//! HPACK's index address space (RFC 7541 §2.3): the static table, then the dynamic table,
//! whose entries' bytes live in one buffer (entries are added at its end and evicted from its
//! start), so adding an entry allocates nothing once the buffer has grown.

use std::collections::VecDeque;

/// The static table (RFC 7541 Appendix A): index 1 is the first entry.
pub(super) const STATIC: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// What an entry costs in the table beyond its name and value (RFC 7541 §4.1).
pub(super) const ENTRY_OVERHEAD: usize = 32;

/// The first index of the static table that has `name`.
pub(super) fn static_name(name: &[u8]) -> Option<usize> {
    STATIC.iter().position(|(n, _)| *n == name).map(|i| i + 1)
}

/// The static table and a dynamic table (RFC 7541 §2.3.3: index 1 is the static table's first
/// entry, index 62 the dynamic table's newest).
#[derive(Debug)]
pub(super) struct Table {
    /// The entries' names and values, oldest first, from `bytes[first..]`; an entry being added
    /// follows them.
    bytes: Vec<u8>,
    /// Where the oldest entry's bytes start in `bytes`.
    first: usize,
    /// The position of `bytes[0]` in the count of all bytes ever added, which entries' starts
    /// are positions in (wrapping: only differences are used).
    base: usize,
    /// The entries, newest first.
    entries: VecDeque<Entry>,
    /// The sum of the entries' sizes (§4.1).
    size: usize,
    /// The size it may have (§4.2), set by the last size update.
    max_size: usize,
}

/// A dynamic table entry: where its bytes start and how long its name and value are.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Where its bytes start, in the count of all bytes ever added.
    start: usize,
    /// Its name's length.
    name: usize,
    /// Its value's length.
    value: usize,
}

impl Table {
    /// An empty dynamic table of at most `max_size`.
    pub(super) fn new(max_size: usize) -> Table {
        Table {
            bytes: Vec::new(),
            first: 0,
            base: 0,
            entries: VecDeque::new(),
            size: 0,
            max_size,
        }
    }

    /// The size of the dynamic table's entries (§4.1).
    #[cfg(test)]
    pub(super) fn size(&self) -> usize {
        self.size
    }

    /// How many entries the dynamic table has.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The capacities of the buffer and the entry list.
    #[cfg(test)]
    pub(super) fn capacity(&self) -> (usize, usize) {
        (self.bytes.capacity(), self.entries.capacity())
    }

    /// The name and value at `index` (from 1), if there is one.
    pub(super) fn get(&self, index: usize) -> Option<(&[u8], &[u8])> {
        match index.checked_sub(STATIC.len() + 1) {
            None => STATIC.get(index.checked_sub(1)?).copied(),
            Some(at) => self.entries.get(at).map(|entry| self.slices(*entry)),
        }
    }

    /// An entry's name and value.
    fn slices(&self, entry: Entry) -> (&[u8], &[u8]) {
        let at = entry.start.wrapping_sub(self.base);
        let (name, value) = self.bytes[at..at + entry.name + entry.value].split_at(entry.name);
        (name, value)
    }

    /// Sets the dynamic table's maximum size (§6.3), evicting entries down to it.
    pub(super) fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict(0);
    }

    /// Evicts the oldest entries until an entry of `room` bytes fits (§4.4).
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max_size {
            let Some(entry) = self.entries.pop_back() else {
                break;
            };
            self.size -= entry.name + entry.value + ENTRY_OVERHEAD;
            self.first += entry.name + entry.value;
        }
    }

    /// Starts adding an entry: returns where its bytes start in `pending()`, to which the
    /// caller appends its name and then its value before it calls `commit`. An entry's name and
    /// value may take up to `start + room()` bytes of `pending()`.
    pub(super) fn begin(&mut self) -> usize {
        // Whatever an entry left unfinished (its block was not valid) goes.
        let end = self.entries.front().map_or(self.bytes.len(), |newest| {
            newest.start.wrapping_sub(self.base) + newest.name + newest.value
        });
        self.bytes.truncate(end);
        if self.entries.is_empty() || self.first > end - self.first {
            // More evicted bytes than live ones: moving the live ones to the front costs less
            // than the bytes added since the last move, so the buffer stays within about three
            // times the maximum size (evicted, live and the new entry).
            let gone = if self.entries.is_empty() {
                end
            } else {
                self.first
            };
            self.bytes.drain(..gone);
            self.base = self.base.wrapping_add(gone);
            self.first = 0;
        }
        self.bytes.len()
    }

    /// How many bytes an entry's name and value may have together to fit in the table.
    pub(super) fn room(&self) -> usize {
        self.max_size.saturating_sub(ENTRY_OVERHEAD)
    }

    /// The buffer the entry being added is appended to.
    pub(super) fn pending(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Appends the name of the entry at `index` (from 1) to the entry being added, if it keeps
    /// `pending()` within `cap` bytes; false if it does not or there is no such entry.
    pub(super) fn copy_name(&mut self, index: usize, cap: usize) -> bool {
        let range = match index.checked_sub(STATIC.len() + 1) {
            None => {
                let Some((name, _)) = index.checked_sub(1).and_then(|i| STATIC.get(i)) else {
                    return false;
                };
                return append(&mut self.bytes, name, cap);
            }
            Some(at) => match self.entries.get(at) {
                Some(entry) => {
                    let start = entry.start.wrapping_sub(self.base);
                    start..start + entry.name
                }
                None => return false,
            },
        };
        if self.bytes.len() + range.len() > cap {
            return false;
        }
        self.bytes.extend_from_within(range);
        true
    }

    /// Ends adding the entry begun at `start`, whose name is `name` bytes long: it is inserted
    /// as the newest, after evicting what it needs; or, when it did not fit (`fits` false), the
    /// table is emptied (§4.4: an entry larger than the table).
    pub(super) fn commit(&mut self, start: usize, name: usize, fits: bool) {
        let len = self.bytes.len() - start;
        if !fits || len > self.room() {
            self.entries.clear();
            self.size = 0;
            self.base = self.base.wrapping_add(self.bytes.len());
            self.bytes.clear();
            self.first = 0;
            return;
        }
        self.evict(len + ENTRY_OVERHEAD);
        self.entries.push_front(Entry {
            start: self.base.wrapping_add(start),
            name,
            value: len - name,
        });
        self.size += len + ENTRY_OVERHEAD;
    }
}

/// Appends `bytes` to `dst` if it keeps `dst` within `cap` bytes; false (and nothing appended)
/// if not.
pub(super) fn append(dst: &mut Vec<u8>, bytes: &[u8], cap: usize) -> bool {
    if dst.len() + bytes.len() > cap {
        return false;
    }
    dst.extend_from_slice(bytes);
    true
}
