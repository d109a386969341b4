//! Random trace and span ids (never all zero, as W3C Trace Context requires).

use rand::RngCore;

/// A new random 16-byte trace id.
pub fn trace_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    while id == [0; 16] {
        rand::rng().fill_bytes(&mut id);
    }
    id
}

/// A new random 8-byte span id.
pub fn span_id() -> [u8; 8] {
    let mut id = [0u8; 8];
    while id == [0; 8] {
        rand::rng().fill_bytes(&mut id);
    }
    id
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_are_nonzero_and_distinct() {
        let traces: HashSet<_> = (0..1000).map(|_| trace_id()).collect();
        let spans: HashSet<_> = (0..1000).map(|_| span_id()).collect();
        assert_eq!(traces.len(), 1000);
        assert_eq!(spans.len(), 1000);
        assert!(!traces.contains(&[0; 16]));
    }
}
