//! Identities from text (`Identity::parse`) and from certificates' SANs (`identity_of`, on
//! arbitrary DER): an identity or a typed error, never a panic; a parsed identity reads back as
//! itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_core::Identity;
use rustls_pki_types::CertificateDer;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(identity) = Identity::parse(text) {
            let again = Identity::parse(identity.as_str()).expect("a parsed identity parses");
            assert_eq!(again, identity);
        }
    }
    let _ = mesh_tls::identity_of(&CertificateDer::from(data));
});
