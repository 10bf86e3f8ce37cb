//! Copy-mode throughput in frames/s, on the 5-minute 1080p30 file (GOP 30, about 5 Mbit/s,
//! 9000 frames) and the 10-second 720p30 file with B-frames (300 frames):
//!
//! - `read`: crispy's demuxer (libavformat) alone handing out every packet: the ceiling.
//! - `demux+chunk`: FileSource → CopyChunker (MP4 muxing), no hashing or storage.
//! - `pipeline/memory_signed`: the whole pipeline: chunks, SHA-256, hash chain, Ed25519-signed
//!   manifests, InMemory sink, 6 uploads in flight.
//!
//! Run with `cargo xtask bench` (generates the inputs first).

use std::path::Path;
use std::sync::Arc;

use crispy_streamer::chunker::{CopyChunker, CopyChunkerConfig};
use crispy_streamer::core::{Chunker, PacketSource, SourceId};
use crispy_streamer::pipeline::{
    NoopObserver, PipelineOptions, Shutdown, SourceJob, SourceSpec, run_sources,
};
use crispy_streamer::signer::{SigningKey, generate_keypair};
use crispy_streamer::sink::ObjectStoreSink;
use crispy_streamer::source::FileSource;
use crispy_testkit::Fixture;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn read(path: &Path) -> u64 {
    let mut source = FileSource::open(path).expect("open");
    let mut frames = 0;
    while source.next_packet().expect("read").is_some() {
        frames += 1;
    }
    frames
}

fn demux_and_chunk(path: &Path) -> usize {
    let mut source = FileSource::open(path).expect("open");
    let config = CopyChunkerConfig::new(
        SourceId::new("bench").expect("id"),
        "3s".parse().expect("d"),
    );
    let mut chunker = CopyChunker::new(source.stream_info(), config).expect("chunker");
    let mut bytes = 0usize;
    while let Some(p) = source.next_packet().expect("read") {
        if let Some(chunk) = chunker.push(p).expect("push") {
            bytes += chunk.payload.len();
        }
    }
    bytes
        + chunker
            .finish()
            .expect("finish")
            .map_or(0, |c| c.payload.len())
}

fn copy_chunking(c: &mut Criterion) {
    let keys = tempfile::tempdir().expect("tempdir");
    let pem = keys.path().join("bench.pem");
    generate_keypair(&pem).expect("key pair");
    let key = Arc::new(SigningKey::from_pem_file(&pem).expect("key"));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");

    for (group_name, fixture, samples) in [
        ("copy_1080p30_5min", Fixture::H264_1080p30Long, 10),
        ("copy_720p30_bframes", Fixture::H264_720pBframesAac, 20),
    ] {
        let path = fixture
            .path()
            .expect("fixture (is ffmpeg installed? cargo xtask deps)");
        let mut group = c.benchmark_group(group_name);
        group.throughput(Throughput::Elements(fixture.frames()));
        group.sample_size(samples);

        group.bench_function("read", |b| {
            b.iter(|| assert_eq!(read(&path), fixture.frames()))
        });
        group.bench_function("demux+chunk", |b| b.iter(|| demux_and_chunk(&path)));
        group.bench_function("pipeline/memory_signed", |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let sink = Arc::new(ObjectStoreSink::from_url("memory://bench").expect("sink"));
                    let job = SourceJob {
                        source_id: SourceId::new("bench").expect("id"),
                        spec: SourceSpec::File(path.clone()),
                        chunk: "3s".parse().expect("d"),
                        prefix: None,
                    };
                    let options = PipelineOptions {
                        signing_key: Some(key.clone()),
                        ..PipelineOptions::default()
                    };
                    let summaries = run_sources(
                        vec![job],
                        sink,
                        options,
                        Shutdown::new(),
                        Arc::new(NoopObserver),
                    )
                    .await
                    .expect("run");
                    assert_eq!(summaries[0].frames, fixture.frames());
                })
            });
        });
        group.finish();
    }
}

criterion_group!(benches, copy_chunking);
criterion_main!(benches);
