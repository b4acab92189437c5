//! Operator commands that work on a cache folder: `hoard cache …` and `hoard warm`.
