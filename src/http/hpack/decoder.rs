//! Decoding header blocks (RFC 7541 §3, §6): one [`Decoder`] per connection keeps its dynamic
//! table in step with the peer's encoder, block after block.

use super::Error;
use super::huffman;
use super::list::HeaderList;
use super::table::{ENTRY_OVERHEAD, Table, append};

/// A header block decoder: one per connection, fed every header block the peer sends, in
/// order.
#[derive(Debug)]
pub struct Decoder {
    /// The static and dynamic tables.
    table: Table,
    /// The most the dynamic table may hold: what this end advertised.
    max_table_size: usize,
}

impl Decoder {
    /// A decoder whose dynamic table may grow to `max_table_size` bytes: the
    /// SETTINGS_HEADER_TABLE_SIZE this end advertises (4096 unless it says otherwise).
    pub fn new(max_table_size: usize) -> Decoder {
        Decoder {
            table: Table::new(max_table_size),
            max_table_size,
        }
    }

    /// Decodes one whole header block (a HEADERS frame's fragment and its CONTINUATIONs',
    /// joined) into `list` (cleared first).
    ///
    /// Ok(true): every field is in `list`. Ok(false): the block's header list size (RFC 9113
    /// §6.5.2: each field's name and value lengths plus 32) passed `limit`; `list` then holds
    /// only the fields before that, but the dynamic table has still been updated as the whole
    /// block says, so later blocks decode right.
    ///
    /// Err: the block is not valid HPACK (a COMPRESSION_ERROR; the caller ends the
    /// connection).
    pub fn decode(
        &mut self,
        block: &[u8],
        limit: usize,
        list: &mut HeaderList,
    ) -> Result<bool, Error> {
        list.clear();
        let mut cursor = Cursor { rest: block };
        let mut budget = Budget {
            left: limit,
            over: false,
        };
        let mut fields = false;
        while let Some(&first) = cursor.rest.first() {
            if first & 0xe0 == 0x20 {
                if fields {
                    return Err(Error("a dynamic table size update after a field"));
                }
                self.resize(cursor.integer(5)?)?;
                continue;
            }
            fields = true;
            if first & 0x80 != 0 {
                let index = cursor.integer(7)?;
                self.indexed(index, list, &mut budget)?;
            } else {
                // 01: with incremental indexing; 0000 and 0001: without, and never indexed.
                let indexing = first & 0x40 != 0;
                let index = cursor.integer(if indexing { 6 } else { 4 })?;
                self.literal(index, &mut cursor, indexing, list, &mut budget)?;
            }
        }
        Ok(!budget.over)
    }

    /// The size of the dynamic table's entries (§4.1).
    #[cfg(test)]
    pub(super) fn table_size(&self) -> usize {
        self.table.size()
    }

    /// How many entries the dynamic table has.
    #[cfg(test)]
    pub(super) fn table_len(&self) -> usize {
        self.table.len()
    }

    /// The capacities of the dynamic table's buffer and entry list.
    #[cfg(test)]
    pub(super) fn table_capacity(&self) -> (usize, usize) {
        self.table.capacity()
    }

    /// The dynamic table's entry at `index` (from 62).
    #[cfg(test)]
    pub(super) fn table_entry(&self, index: usize) -> Option<(&[u8], &[u8])> {
        self.table.get(index)
    }

    /// A dynamic table size update (§6.3).
    fn resize(&mut self, size: usize) -> Result<(), Error> {
        if size > self.max_table_size {
            return Err(Error("a dynamic table size above the one advertised"));
        }
        self.table.set_max_size(size);
        Ok(())
    }

    /// An indexed field (§6.1).
    fn indexed(
        &self,
        index: usize,
        list: &mut HeaderList,
        budget: &mut Budget,
    ) -> Result<(), Error> {
        let (name, value) = self.field(index)?;
        budget.push(list, Str::Raw(name), Str::Raw(value))?;
        Ok(())
    }

    /// The field at `index`, which must be in the table.
    fn field(&self, index: usize) -> Result<(&[u8], &[u8]), Error> {
        if index == 0 {
            return Err(Error("index 0"));
        }
        self.table
            .get(index)
            .ok_or(Error("an index past the end of the table"))
    }

    /// A literal field (§6.2) whose name is at `index` in the table, or follows when `index`
    /// is 0; added to the dynamic table when `indexing`.
    fn literal(
        &mut self,
        index: usize,
        cursor: &mut Cursor<'_>,
        indexing: bool,
        list: &mut HeaderList,
        budget: &mut Budget,
    ) -> Result<(), Error> {
        let name = match index {
            0 => Name::Literal(cursor.string()?),
            _ => Name::Indexed(index),
        };
        let value = cursor.string()?;
        let pushed = match name {
            Name::Literal(name) => budget.push(list, name, value)?,
            Name::Indexed(index) => {
                let (name, _) = self.field(index)?;
                budget.push(list, Str::Raw(name), value)?
            }
        };
        if !indexing {
            return Ok(());
        }
        // The field as the list holds it saves decoding its strings again.
        match list.last() {
            Some((name, value)) if pushed => insert(
                &mut self.table,
                Name::Literal(Str::Raw(name)),
                Str::Raw(value),
            ),
            _ => insert(&mut self.table, name, value),
        }
    }
}

/// Adds `name: value` to the dynamic table (§4.4), evicting what it needs; a field larger than
/// the table empties it.
fn insert(table: &mut Table, name: Name<'_>, value: Str<'_>) -> Result<(), Error> {
    let start = table.begin();
    let cap = start + table.room();
    let name_fits = match name {
        Name::Indexed(index) => table.copy_name(index, cap),
        Name::Literal(name) => name.write(table.pending(), cap)?,
    };
    let name_len = table.pending().len() - start;
    let value_fits = value.write(table.pending(), cap)?;
    table.commit(start, name_len, name_fits && value_fits);
    Ok(())
}

/// A literal field's name: at an index of the table, or a string of its own.
#[derive(Clone, Copy)]
enum Name<'a> {
    /// The name of the entry at this index (from 1).
    Indexed(usize),
    /// A string literal.
    Literal(Str<'a>),
}

/// A string literal (§5.2), as the block holds it.
#[derive(Clone, Copy)]
enum Str<'a> {
    /// As it is.
    Raw(&'a [u8]),
    /// Huffman-coded (§5.2, Appendix B).
    Huffman(&'a [u8]),
}

impl Str<'_> {
    /// Appends the string, decoded, to `dst` as long as `dst` stays within `cap` bytes;
    /// Ok(false) when it does not fit (`dst` then holds a part of it, or none).
    fn write(self, dst: &mut Vec<u8>, cap: usize) -> Result<bool, Error> {
        match self {
            Str::Raw(bytes) => Ok(append(dst, bytes, cap)),
            Str::Huffman(bytes) => huffman::decode(bytes, dst, cap),
        }
    }

    /// Checks that the string decodes, keeping nothing.
    fn check(self) -> Result<(), Error> {
        self.write(&mut Vec::new(), 0).map(|_| ())
    }
}

/// What is left of a block's header list size limit.
struct Budget {
    /// The header list size the fields so far leave.
    left: usize,
    /// Whether a field has passed the limit: no more are kept.
    over: bool,
}

impl Budget {
    /// Appends `name: value` to `list` if it is within the limit; Ok(false) if not, and from
    /// then on, where the strings are only checked.
    fn push(
        &mut self,
        list: &mut HeaderList,
        name: Str<'_>,
        value: Str<'_>,
    ) -> Result<bool, Error> {
        let room = match self.over {
            false => self.left.checked_sub(ENTRY_OVERHEAD),
            true => None,
        };
        let Some(room) = room else {
            self.over = true;
            name.check()?;
            value.check()?;
            return Ok(false);
        };
        let bytes = list.bytes();
        let start = bytes.len();
        let cap = start.saturating_add(room);
        let name_fits = name.write(bytes, cap)?;
        let name_len = bytes.len() - start;
        let value_fits = value.write(bytes, cap)?;
        if !(name_fits && value_fits) {
            bytes.truncate(start);
            self.over = true;
            return Ok(false);
        }
        self.left -= bytes.len() - start + ENTRY_OVERHEAD;
        list.finish(start, name_len);
        Ok(true)
    }
}

/// The bytes of a block not read yet.
struct Cursor<'a> {
    /// From the next byte to the block's end.
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// The next byte.
    fn byte(&mut self) -> Result<u8, Error> {
        let (&byte, rest) = self
            .rest
            .split_first()
            .ok_or(Error("a block that ends inside an integer"))?;
        self.rest = rest;
        Ok(byte)
    }

    /// An integer with a `prefix`-bit prefix (§5.1), at most u32::MAX in at most 5 bytes
    /// after the prefix.
    fn integer(&mut self, prefix: u32) -> Result<usize, Error> {
        let max = (1u8 << prefix) - 1;
        let first = self.byte()? & max;
        if first < max {
            return Ok(usize::from(first));
        }
        let mut value = u64::from(max);
        for shift in [0, 7, 14, 21, 28] {
            let byte = self.byte()?;
            value += u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return u32::try_from(value)
                    .ok()
                    .and_then(|value| usize::try_from(value).ok())
                    .ok_or(Error("an integer larger than 2^32 - 1"));
            }
        }
        Err(Error("an integer of more than 5 bytes after its prefix"))
    }

    /// A string literal (§5.2).
    fn string(&mut self) -> Result<Str<'a>, Error> {
        let huffman = self.rest.first().is_some_and(|byte| byte & 0x80 != 0);
        let len = self.integer(7)?;
        if len > self.rest.len() {
            return Err(Error("a string that runs past the end of the block"));
        }
        let (bytes, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(match huffman {
            true => Str::Huffman(bytes),
            false => Str::Raw(bytes),
        })
    }
}
