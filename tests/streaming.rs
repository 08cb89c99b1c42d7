//! Bodies stream through the gateway: large uploads and downloads arrive intact without
//! being held in memory, and chunked bodies work both ways.

mod support;

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use support::{client, upstream};

const BIG: u64 = 100 * 1024 * 1024;

/// Memory the gateway may use on top of its own baseline while moving 100 MiB: far less
/// than the body, so a buffered body fails this.
const MAX_GROWTH_KIB: u64 = 40 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn large_upload_and_download_stream_with_checksums() {
    let (_up, gw) = support::core_gateway("files").await;
    // Warm up, then take the baseline.
    assert!(
        client()
            .get(gw.url("/core/x"))
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let baseline = gw.peak_rss_kib();

    // Upload: a streamed (chunked) body of 100 MiB.
    let chunks = futures_util::stream::iter((0..BIG).step_by(1 << 20))
        .map(|start| Ok::<_, std::io::Error>(upstream::payload_chunk(start, 1 << 20)));
    let resp = client()
        .post(gw.url("/core/upload"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got: serde_json::Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(got["bytes"], BIG);
    assert_eq!(got["sha256"], upstream::payload_sha256(BIG));

    // Download: 100 MiB, chunked from the upstream.
    let resp = client()
        .get(gw.url(&format!("/core/big/{BIG}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        n += chunk.len() as u64;
        h.update(&chunk);
    }
    assert_eq!(n, BIG);
    assert_eq!(upstream::hex(&h.finalize()), upstream::payload_sha256(BIG));

    let peak = gw.peak_rss_kib();
    eprintln!("gateway peak RSS: baseline {baseline} KiB, after 2 x 100 MiB {peak} KiB");
    assert!(
        peak.saturating_sub(baseline) < MAX_GROWTH_KIB,
        "gateway peak RSS grew from {baseline} KiB to {peak} KiB while moving 2 x 100 MiB"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_bodies_work_both_ways() {
    let (_up, gw) = support::core_gateway("files").await;

    // Chunked request body, mirrored back by the upstream.
    let parts = ["alpha,", "beta,", "gamma"];
    let body =
        futures_util::stream::iter(parts).map(|p| Ok::<_, std::io::Error>(p.as_bytes().to_vec()));
    let resp = client()
        .post(gw.url("/core/mirror"))
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "alpha,beta,gamma");

    // Chunked response, over a raw socket to see the framing the client gets.
    let resp = support::raw_request(
        gw.addr(),
        b"GET /core/chunked HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    let lower = resp.to_ascii_lowercase();
    assert!(lower.contains("transfer-encoding: chunked"), "{resp}");
    let body = &resp[resp.find("\r\n\r\n").unwrap() + 4..];
    assert_eq!(dechunk(body), "one,two,three");

    // A raw chunked request with a trailer-less terminator.
    let resp = support::raw_request(
        gw.addr(),
        b"POST /core/upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"bytes\":11"), "{resp}");
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let Some(eol) = body.find("\r\n") else {
            return out;
        };
        let len = usize::from_str_radix(body[..eol].trim(), 16).unwrap_or(0);
        if len == 0 {
            return out;
        }
        out.push_str(&body[eol + 2..eol + 2 + len]);
        body = &body[eol + 2 + len + 2..];
    }
}
