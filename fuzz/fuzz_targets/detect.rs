//! Protocol detection on arbitrary first bytes: it decides without panicking, and the
//! connection it hands on replays every byte read, in order (nothing lost, nothing added).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_core::detect::{DetectConfig, detect_protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fuzz_target!(|data: &[u8]| {
    mesh_fuzz::runtime().block_on(async {
        let (mut client, server) = tokio::io::duplex(data.len().max(1));
        let input = data.to_vec();
        let writer = tokio::spawn(async move {
            let _ = client.write_all(&input).await;
        });
        let config = DetectConfig::default().capacity(1024);
        let Ok(mut detected) = detect_protocol(server, config).await else {
            return;
        };
        let mut replayed = Vec::new();
        let _ = writer.await;
        let _ = detected.io.read_to_end(&mut replayed).await;
        assert_eq!(replayed, data, "detection lost or changed bytes");
    });
});
