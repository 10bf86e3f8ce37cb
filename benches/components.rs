//! The pipeline's parts, one at a time, on a real 3-second 1080p30 chunk (90 frames, about
//! 1.9 MB) cut from the 1080p30 fixture:
//!
//! - `mux/copy_3s`: CopyChunker turning the chunk's 90 demuxed packets into an MP4;
//! - `seal/*`: SHA-256 of the payload, hash chain and manifest, unsigned / HMAC / Ed25519;
//! - `probe/sps_h264`: resolution and stream facts from the SPS;
//!   `probe/mp4_chunk`: the same from the finished MP4 chunk;
//! - `upload/file_6_in_flight`: 12 such chunks stored into a `file://` sink, 6 puts at once;
//! - `spool/accept_full_100k_pending`: accepting a live chunk into a full spool of 100,000
//!   pending chunks (in memory), which drops the oldest.
//!
//! Throughput is in bytes of chunk payload (elements for the probes). Run with
//! `cargo xtask bench`.

use std::sync::Arc;

use bytes::Bytes;
use crispy_streamer::chunker::{CopyChunker, CopyChunkerConfig};
use crispy_streamer::core::{
    Chunk, ChunkMetadata, ChunkSink, Chunker, EncodedPacket, MetadataSigner, PacketSource, Payload,
    SourceId, StreamInfo,
};
use crispy_streamer::probe::{Mp4Probe, SpsProbe};
use crispy_streamer::signer::{Sealer, SigningKey, generate_keypair};
use crispy_streamer::sink::{ObjectStoreSink, Spool};
use crispy_streamer::source::FileSource;
use crispy_testkit::Fixture;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;

/// The first chunk's packets (3 s at 30 fps) and the stream they belong to.
fn first_chunk_packets() -> (StreamInfo, Vec<EncodedPacket>) {
    let path = Fixture::H264_1080p30Gop30
        .path()
        .expect("fixture (is ffmpeg installed? cargo xtask deps)");
    let mut source = FileSource::open(&path).expect("open");
    let info = source.stream_info().clone();
    let mut packets = Vec::new();
    while packets.len() < 90 {
        packets.push(source.next_packet().expect("read").expect("a packet"));
    }
    (info, packets)
}

fn chunker(info: &StreamInfo) -> CopyChunker {
    let config = CopyChunkerConfig::new(
        SourceId::new("bench").expect("id"),
        "3s".parse().expect("d"),
    );
    CopyChunker::new(info, config).expect("chunker")
}

/// Muxes `packets` into one MP4 chunk.
fn mux(info: &StreamInfo, packets: &[EncodedPacket]) -> Chunk {
    let mut chunker = chunker(info);
    for p in packets {
        assert!(chunker.push(p.clone()).expect("push").is_none());
    }
    chunker.finish().expect("finish").expect("a chunk")
}

fn components(c: &mut Criterion) {
    let (info, packets) = first_chunk_packets();
    let mut chunk = mux(&info, &packets);
    let sink = ObjectStoreSink::from_url("memory://bench").expect("sink");
    chunk.metadata.object = sink.object_path(&chunk.metadata);
    let payload_len = chunk.payload.len() as u64;

    let mut group = c.benchmark_group("mux");
    group.throughput(Throughput::Bytes(payload_len));
    group.bench_function("copy_3s", |b| b.iter(|| mux(&info, &packets).payload.len()));
    group.finish();

    let keys = tempfile::tempdir().expect("tempdir");
    let pem = keys.path().join("bench.pem");
    generate_keypair(&pem).expect("key pair");
    let signers = [
        ("sha256_unsigned", None),
        (
            "sha256+hmac",
            Some(SigningKey::hmac(&[7u8; 32]).expect("hmac key")),
        ),
        (
            "sha256+ed25519",
            Some(SigningKey::from_pem_file(&pem).expect("ed25519 key")),
        ),
    ];
    let mut group = c.benchmark_group("seal");
    group.throughput(Throughput::Bytes(payload_len));
    for (name, key) in signers {
        let mut sealer = Sealer::new(key.map(Arc::new), Some("0".repeat(64)));
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || chunk.clone(),
                |c| sealer.seal(c).expect("seal").len(),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();

    let mut group = c.benchmark_group("probe");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sps_h264", |b| {
        b.iter(|| SpsProbe::h264_report(&info.extradata).expect("sps"))
    });
    let whole = chunk.payload.to_bytes();
    group.bench_function("mp4_chunk", |b| {
        b.iter(|| Mp4Probe::probe(&whole).expect("mp4"))
    });
    group.finish();

    upload(c, &chunk);
    spool(c);
}

/// A spool holding `PENDING` chunks of a live source, full: every accept drops the oldest
/// (what a long sink outage looks like after the spool fills).
fn spool(c: &mut Criterion) {
    const PENDING: u64 = 100_000;
    let payload = Payload::from(&b"0123456789abcdef"[..]);
    let manifest = Bytes::from_static(b"{}");
    let meta = |sequence: u64| {
        let mut m: ChunkMetadata =
            serde_json::from_str(crispy_testkit::SAMPLE_MANIFEST_JSON).expect("manifest");
        m.object = "x.mp4".to_owned();
        m.sha256 = format!("{sequence:064x}");
        m.sequence = sequence;
        m
    };
    let entry_bytes = (payload.len() + manifest.len()) as u64;
    let spool = Spool::in_memory(PENDING * entry_bytes);
    for sequence in 0..PENDING {
        let accepted = spool
            .accept(&meta(sequence), &payload, &manifest, true, &|| false)
            .expect("accept");
        assert!(accepted.dropped.is_empty());
    }
    let mut sequence = PENDING;
    let mut group = c.benchmark_group("spool");
    group.throughput(Throughput::Elements(1));
    group.bench_function("accept_full_100k_pending", |b| {
        b.iter(|| {
            let accepted = spool
                .accept(&meta(sequence), &payload, &manifest, true, &|| false)
                .expect("accept");
            sequence += 1;
            assert_eq!(accepted.dropped.len(), 1, "the oldest made room");
        })
    });
    group.finish();
}

/// 12 chunks into a fresh `file://` directory per iteration, 6 puts in flight.
fn upload(c: &mut Criterion, chunk: &Chunk) {
    const CHUNKS: u64 = 12;
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let manifest = Bytes::from(chunk.metadata.to_json());
    let mut group = c.benchmark_group("upload");
    group.throughput(Throughput::Bytes(chunk.payload.len() as u64 * CHUNKS));
    group.sample_size(20);
    group.bench_function("file_6_in_flight", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("file://{}", dir.path().display());
                let sink = ObjectStoreSink::from_url(&url).expect("sink");
                let chunks: Vec<Chunk> = (0..CHUNKS)
                    .map(|i| {
                        let mut c = chunk.clone();
                        c.metadata.sequence = i;
                        c.metadata.object = sink.object_path(&c.metadata);
                        c
                    })
                    .collect();
                (dir, sink, chunks)
            },
            |(dir, sink, chunks)| {
                runtime.block_on(async {
                    futures::stream::iter(&chunks)
                        .map(|c| sink.put(c, manifest.clone()))
                        .buffer_unordered(6)
                        .for_each(|r| async move {
                            r.expect("put");
                        })
                        .await;
                });
                dir
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, components);
criterion_main!(benches);
