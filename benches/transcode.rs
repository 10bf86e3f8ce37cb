//! Transcode-mode throughput in frames/s on the 1080p30 fixture (10 s, 300 frames), libx264
//! `ultrafast`: 1080p → 1080p and 1080p → 720p. Decoding, scaling and encoding included;
//! the chunker and storage are not (see `copy_chunking` for those).
//!
//! Run with `cargo xtask bench`.

use crispy_streamer::core::PacketSource;
use crispy_streamer::source::{TranscodeConfig, TranscodeSource};
use crispy_testkit::Fixture;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn transcode(c: &mut Criterion) {
    let fixture = Fixture::H264_1080p30Gop30;
    let path = fixture
        .path()
        .expect("fixture (is ffmpeg installed? cargo xtask deps)");
    let mut group = c.benchmark_group("transcode_1080p30_ultrafast");
    group.throughput(Throughput::Elements(fixture.frames()));
    group.sample_size(10);
    for (name, max_height) in [("to_1080p", None), ("to_720p", Some(720))] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut config = TranscodeConfig::new(3000);
                config.preset = "ultrafast".to_owned();
                config.max_height = max_height;
                let mut source = TranscodeSource::open(&path, config).expect("open");
                let mut frames = 0u64;
                while source.next_packet().expect("transcode").is_some() {
                    frames += 1;
                }
                assert_eq!(frames, fixture.frames());
                frames
            });
        });
    }
    group.finish();
}

criterion_group!(benches, transcode);
criterion_main!(benches);
