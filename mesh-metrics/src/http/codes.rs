//! Which response codes are counted apart: HTTP status codes and gRPC status codes, bounded.
//!
//! A status code is a label worth having ("which calls fail, and how"), but a label that takes
//! any value a server sends is a cardinality hole. So each HTTP status code in IANA's registry
//! has a counter of its own, and any other code counts as its class's `other` (`4xx` for 499,
//! for example); gRPC codes 0 to 16 have one each and anything past them counts as `other`.
//! One counter per response, picked by a table lookup: no branch on the code, no lookup by name.

use http::StatusCode;
use mesh_core::grpc::GrpcCode;

/// The HTTP status codes counted apart, in order: IANA's registry (418 included), and 499,
/// which nginx and Envoy answer for a client that went away.
const REGISTERED: [u16; 63] = [
    100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304,
    305, 307, 308, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415,
    416, 417, 418, 421, 422, 423, 424, 425, 426, 428, 429, 431, 451, 499, 500, 501, 502, 503, 504,
    505, 506, 507, 508, 510, 511,
];

/// Counter slots for HTTP codes: one per registered code, then one `other` per class (1xx to
/// 5xx, then codes outside 100 to 599).
pub(crate) const HTTP_SLOTS: usize = REGISTERED.len() + 6;

/// Counter slots for gRPC codes: 0 to 16, then `other`.
pub(crate) const GRPC_SLOTS: usize = 18;

/// `code - 100` to its slot, for 100 to 599.
const SLOT_OF: [u8; 500] = {
    let mut table = [0u8; 500];
    let mut code = 100;
    while code < 600 {
        // The class's `other` slot unless the code is registered.
        table[code - 100] = (REGISTERED.len() + code / 100 - 1) as u8;
        code += 1;
    }
    let mut i = 0;
    while i < REGISTERED.len() {
        table[REGISTERED[i] as usize - 100] = i as u8;
        i += 1;
    }
    table
};

/// The counter slot of an HTTP status.
#[inline]
pub(crate) fn http_slot(status: StatusCode) -> usize {
    let code = usize::from(status.as_u16());
    match code.checked_sub(100).and_then(|i| SLOT_OF.get(i)) {
        Some(&slot) => usize::from(slot),
        None => HTTP_SLOTS - 1,
    }
}

/// The status class of a slot: 0 for 1xx up to 4 for 5xx, 5 for anything else.
pub(crate) fn class_of_slot(slot: usize) -> usize {
    match REGISTERED.get(slot) {
        Some(code) => usize::from(code / 100) - 1,
        None => slot - REGISTERED.len(),
    }
}

/// What a slot is written as: the code, or the class's `other`.
pub(crate) fn http_slot_label(slot: usize) -> HttpCode {
    match REGISTERED.get(slot) {
        Some(&code) => HttpCode::Code(code),
        None => HttpCode::Other,
    }
}

/// An HTTP status as counted: a registered code, or another code of its class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum HttpCode {
    /// A registered status code.
    Code(u16),
    /// A code outside IANA's registry (counted per status class).
    Other,
}

/// The counter slot of a gRPC status.
#[inline]
pub(crate) fn grpc_slot(code: GrpcCode) -> usize {
    usize::from(code.as_u16()).min(GRPC_SLOTS - 1)
}

/// The name a gRPC slot is written as: `OK`, `NOT_FOUND`, ... or `other`.
pub(crate) fn grpc_slot_name(slot: usize) -> &'static str {
    u16::try_from(slot)
        .ok()
        .filter(|&code| usize::from(code) < GRPC_SLOTS - 1)
        .and_then(|code| GrpcCode::from_u16(code).name())
        .unwrap_or("other")
}

/// The code of a gRPC slot, `None` for `other`.
pub(crate) fn grpc_slot_code(slot: usize) -> Option<GrpcCode> {
    u16::try_from(slot)
        .ok()
        .filter(|&code| usize::from(code) < GRPC_SLOTS - 1)
        .map(GrpcCode::from_u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_code_has_its_slot_and_others_share_their_class() {
        assert!(
            REGISTERED.is_sorted(),
            "in code order: snapshots and exposition follow it"
        );
        for (i, &code) in REGISTERED.iter().enumerate() {
            let status = StatusCode::from_u16(code).expect("valid");
            assert_eq!(http_slot(status), i);
            assert_eq!(http_slot_label(i), HttpCode::Code(code));
            assert_eq!(class_of_slot(i), usize::from(code / 100) - 1);
        }
        for code in [199u16, 299, 420, 498, 599] {
            let slot = http_slot(StatusCode::from_u16(code).expect("valid"));
            assert_eq!(http_slot_label(slot), HttpCode::Other, "{code}");
            assert_eq!(class_of_slot(slot), usize::from(code / 100) - 1, "{code}");
        }
        let odd = http_slot(StatusCode::from_u16(999).expect("valid"));
        assert_eq!((odd, class_of_slot(odd)), (HTTP_SLOTS - 1, 5));
    }

    #[test]
    fn grpc_codes_are_named_and_bounded() {
        assert_eq!(grpc_slot_name(grpc_slot(GrpcCode::OK)), "OK");
        assert_eq!(grpc_slot_name(grpc_slot(GrpcCode::NOT_FOUND)), "NOT_FOUND");
        assert_eq!(grpc_slot_name(grpc_slot(GrpcCode::from_u16(99))), "other");
        assert_eq!(grpc_slot_code(grpc_slot(GrpcCode::from_u16(99))), None);
    }
}
