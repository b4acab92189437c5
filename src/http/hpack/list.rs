//! The header fields a block decodes to, as raw bytes in one buffer.

/// Decoded header fields, names and values as raw bytes, in order. Reused from block to block:
/// after warm-up, decoding allocates nothing.
#[derive(Debug, Default, Clone)]
pub struct HeaderList {
    /// Every field's name then value, one after the other.
    bytes: Vec<u8>,
    /// Where each field's name and value end in `bytes` (each field starts where the one
    /// before it ends).
    ends: Vec<(usize, usize)>,
}

impl HeaderList {
    /// An empty list.
    pub fn new() -> HeaderList {
        HeaderList::default()
    }

    /// Empties the list, keeping its memory.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// Appends the field `name: value`.
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(name);
        self.bytes.extend_from_slice(value);
        self.finish(start, name.len());
    }

    /// How many fields there are.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The fields, names and values, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&(name_end, value_end)| {
            let name = &self.bytes[start..name_end];
            let value = &self.bytes[name_end..value_end];
            start = value_end;
            (name, value)
        })
    }

    /// The capacities of the byte buffer and the field list.
    #[cfg(test)]
    pub(super) fn capacity(&self) -> (usize, usize) {
        (self.bytes.capacity(), self.ends.capacity())
    }

    /// The last field, if any.
    pub(super) fn last(&self) -> Option<(&[u8], &[u8])> {
        let &(name_end, value_end) = self.ends.last()?;
        let start = self.ends.len().checked_sub(2).map_or(0, |i| self.ends[i].1);
        Some((
            &self.bytes[start..name_end],
            &self.bytes[name_end..value_end],
        ))
    }

    /// The buffer a field being added is appended to, its name then its value; it starts at
    /// `bytes().len()` as it was before.
    pub(super) fn bytes(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Ends adding the field that starts at `start` in `bytes()`, with a name of `name` bytes.
    pub(super) fn finish(&mut self, start: usize, name: usize) {
        self.ends.push((start + name, self.bytes.len()));
    }
}
