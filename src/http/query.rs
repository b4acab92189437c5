//! Percent-encoding of a value for a URL query or an `application/x-www-form-urlencoded` body.

/// `text` with every byte but RFC 3986's unreserved ones (`A-Z a-z 0-9 - _ . ~`) as `%XX`.
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_but_unreserved_bytes_are_encoded() {
        assert_eq!(
            percent_encode("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
        assert_eq!(percent_encode("a-b_c.d~e f+é"), "a-b_c.d~e%20f%2B%C3%A9");
    }
}
