//! Copy-mode chunking throughput in frames/s on the 1080p30 fixture.
//!
//! - `demux+chunk`: FileSource → CopyChunker (MP4 muxing included), no hashing or storage.
//! - `pipeline/memory`: the whole pipeline (hash, manifest, InMemory sink, 6 in flight).
//!
//! Run with `cargo xtask bench` (generates the inputs first).

use std::sync::Arc;

use crispy_streamer::chunker::{CopyChunker, CopyChunkerConfig};
use crispy_streamer::core::{Chunker, PacketSource, SourceId};
use crispy_streamer::pipeline::{FileRun, NoopObserver, run_file};
use crispy_streamer::sink::ObjectStoreSink;
use crispy_streamer::source::FileSource;
use crispy_testkit::Fixture;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn copy_chunking(c: &mut Criterion) {
    let fixture = Fixture::H264_1080p30Gop30;
    let path = fixture
        .path()
        .expect("fixture (is ffmpeg installed? cargo xtask deps)");
    let mut group = c.benchmark_group("copy_1080p30");
    group.throughput(Throughput::Elements(fixture.frames()));
    group.sample_size(20);

    group.bench_function("demux+chunk", |b| {
        b.iter(|| {
            let mut source = FileSource::open(&path).expect("open");
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
            bytes += chunker
                .finish()
                .expect("finish")
                .map_or(0, |c| c.payload.len());
            bytes
        });
    });

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    group.bench_function("pipeline/memory", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let sink = Arc::new(ObjectStoreSink::from_url("memory://bench").expect("sink"));
                run_file(FileRun::new(&path), sink, Arc::new(NoopObserver))
                    .await
                    .expect("run")
            })
        });
    });
    group.finish();
}

criterion_group!(benches, copy_chunking);
criterion_main!(benches);
