//! Stream-copy chunking of real files, checked with ffprobe/ffmpeg and the `mp4` crate.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use crispy_chunker::{CopyChunker, CopyChunkerConfig};
use crispy_core::{Chunk, ChunkDuration, Chunker, PacketSource, SourceId};
use crispy_source::FileSource;
use crispy_testkit::{Fixture, decode_errors, ffprobe_video};

fn chunk_file(path: &Path, target: &str) -> Result<Vec<Chunk>> {
    let mut source = FileSource::open(path)?;
    let target: ChunkDuration = target.parse()?;
    let config = CopyChunkerConfig::new(SourceId::new("test")?, target);
    let mut chunker = CopyChunker::new(source.stream_info(), config)?;
    let mut chunks = Vec::new();
    while let Some(p) = source.next_packet()? {
        chunks.extend(chunker.push(p)?);
    }
    chunks.extend(chunker.finish()?);
    Ok(chunks)
}

/// Every property the foundation issue asks of copy-mode chunks, on one fixture.
fn check_fixture(fixture: Fixture, target: &str, expect_chunks: usize) -> Result<()> {
    let chunks = chunk_file(&fixture.path()?, target)?;
    ensure!(
        chunks.len() == expect_chunks,
        "{fixture:?}: {} chunks, want {expect_chunks}",
        chunks.len()
    );
    let dir = tempfile::tempdir()?;
    let (mut frames, mut duration_ts) = (0u64, 0i64);
    let (w, h) = fixture.size();
    for (i, chunk) in chunks.iter().enumerate() {
        let m = &chunk.metadata;
        ensure!(m.sequence == i as u64, "sequence {} at {i}", m.sequence);
        ensure!(m.keyframe_aligned);
        ensure!(m.bytes == chunk.payload.len() as u64);
        let file = dir.path().join(format!("{i:03}.mp4"));
        std::fs::write(&file, chunk.payload.to_bytes())?;

        let errors = decode_errors(&file)?;
        ensure!(
            errors.trim().is_empty(),
            "{fixture:?} chunk {i} decodes with errors: {errors}"
        );
        let probe = ffprobe_video(&file).with_context(|| format!("chunk {i}"))?;
        ensure!(
            (probe.width, probe.height) == (w, h),
            "chunk {i}: {}x{}",
            probe.width,
            probe.height
        );
        ensure!((m.width, m.height) == (w, h));
        let probe_ms = probe.duration_s * 1000.0;
        ensure!(
            (probe_ms - m.duration_ms as f64).abs() <= 1.0,
            "{fixture:?} chunk {i}: ffprobe duration {probe_ms} ms, manifest {} ms",
            m.duration_ms
        );
        ensure!(
            probe.start_s.abs() < 1e-6,
            "chunk {i} starts at {} s, not 0",
            probe.start_s
        );
        ensure!(
            probe.packets == m.frame_count,
            "chunk {i}: {} packets, manifest {}",
            probe.packets,
            m.frame_count
        );
        let decoded = crispy_testkit::decoded_frames(&file)?;
        ensure!(
            decoded == m.frame_count,
            "chunk {i}: decoded {decoded} frames, manifest {}",
            m.frame_count
        );

        // An independent MP4 parser agrees on the sample table.
        let reader =
            mp4::Mp4Reader::read_header(std::io::Cursor::new(chunk.payload.to_bytes()), m.bytes)?;
        let track = reader.tracks().get(&1).context("track 1")?;
        ensure!(u64::from(track.sample_count()) == m.frame_count);
        ensure!(track.timescale() == m.time_base.den as u32);

        // Continuity: each chunk starts where the previous one ended.
        if let Some(prev) = i.checked_sub(1).map(|j| &chunks[j].metadata) {
            ensure!(
                prev.start_pts + prev.duration_ts == m.start_pts,
                "gap/overlap between chunk {j} and {i}: {} + {} != {}",
                prev.start_pts,
                prev.duration_ts,
                m.start_pts,
                j = i - 1
            );
        }
        frames += m.frame_count;
        duration_ts += m.duration_ts;
    }
    ensure!(
        frames == fixture.frames(),
        "{fixture:?}: {frames} frames in chunks, source has {}",
        fixture.frames()
    );
    let tb = chunks[0].metadata.time_base;
    let total_ms = tb.ticks_to_millis(duration_ts);
    ensure!(
        total_ms == fixture.duration_ms() as i64,
        "{fixture:?}: chunks last {total_ms} ms"
    );
    Ok(())
}

#[test]
fn h264_1080p_gop30_3s_chunks_are_exact() -> Result<()> {
    check_fixture(Fixture::H264_1080p30Gop30, "3s", 4)
}

#[test]
fn h264_1080p_gop30_1500ms_chunks_close_at_next_keyframe() -> Result<()> {
    // GOP is 1 s: a 1.5 s target closes at the 2 s keyframe.
    let chunks = chunk_file(&Fixture::H264_1080p30Gop30.path()?, "1500ms")?;
    let durations: Vec<u64> = chunks.iter().map(|c| c.metadata.duration_ms).collect();
    assert_eq!(durations, vec![2000, 2000, 2000, 2000, 2000]);
    check_fixture(Fixture::H264_1080p30Gop30, "1500ms", 5)
}

#[test]
fn h264_bframes_with_audio() -> Result<()> {
    check_fixture(Fixture::H264_720pBframesAac, "3s", 3)
}

#[test]
fn h265_hvc1() -> Result<()> {
    check_fixture(Fixture::H265_720p, "2s", 3)?;
    let chunks = chunk_file(&Fixture::H265_720p.path()?, "2s")?;
    let dir = tempfile::tempdir()?;
    let f = dir.path().join("c.mp4");
    std::fs::write(&f, chunks[1].payload.to_bytes())?;
    let probe = ffprobe_video(&f)?;
    assert_eq!((probe.codec.as_str(), probe.tag.as_str()), ("hevc", "hvc1"));
    Ok(())
}

#[test]
fn long_gop_chunks_follow_keyframes() -> Result<()> {
    // GOP 250 at 25 fps = 10 s: a 3 s target still gives 10 s, 10 s, 4 s.
    check_fixture(Fixture::H264LongGop250, "3s", 3)?;
    let chunks = chunk_file(&Fixture::H264LongGop250.path()?, "3s")?;
    let durations: Vec<u64> = chunks.iter().map(|c| c.metadata.duration_ms).collect();
    assert_eq!(durations, vec![10_000, 10_000, 4_000]);
    Ok(())
}

/// The profile a file source reports (and every manifest carries) is ffprobe's, for files whose
/// stream information is taken from the MP4 header alone and for those analysed in full.
#[test]
fn file_sources_report_the_profile_ffprobe_reports() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut files = vec![
        Fixture::H264_1080p30Gop30.path()?,
        Fixture::H265_720p.path()?,
    ];
    for (name, args) in [
        (
            "baseline.mp4",
            &[
                "-pix_fmt",
                "yuv420p",
                "-c:v",
                "libx264",
                "-profile:v",
                "baseline",
            ][..],
        ),
        (
            "high10.mp4",
            &[
                "-pix_fmt",
                "yuv420p10le",
                "-c:v",
                "libx264",
                "-profile:v",
                "high10",
            ],
        ),
        ("high444.mp4", &["-pix_fmt", "yuv444p", "-c:v", "libx264"]),
        (
            "intra444.mp4",
            &[
                "-pix_fmt",
                "yuv444p10le",
                "-c:v",
                "libx264",
                "-x264-params",
                "keyint=1",
            ],
        ),
        (
            "main10.mp4",
            &[
                "-pix_fmt",
                "yuv420p10le",
                "-c:v",
                "libx265",
                "-x265-params",
                "log-level=error",
            ],
        ),
        // A fragmented file: its header has no duration, so it is analysed in full.
        (
            "fragmented.mp4",
            &["-c:v", "libx264", "-movflags", "+frag_keyframe+empty_moov"],
        ),
        // Two video streams: analysed in full, so the same stream is chosen.
        (
            "two_videos.mp4",
            &["-c:v", "libx264", "-map", "0", "-map", "0"],
        ),
    ] {
        let path = dir.path().join(name);
        let mut cmd = vec![
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x120:rate=25",
            "-t",
            "1",
        ];
        cmd.extend_from_slice(args);
        cmd.push(path.to_str().context("temp path")?);
        crispy_testkit::ffmpeg(&cmd)?;
        files.push(path);
    }
    for file in files {
        let expected = crispy_testkit::run(
            std::process::Command::new("ffprobe")
                .args([
                    "-v",
                    "error",
                    "-select_streams",
                    "v:0",
                    "-show_entries",
                    "stream=profile",
                    "-of",
                    "csv=p=0",
                ])
                .arg(&file),
        )?;
        let source = FileSource::open(&file)?;
        assert_eq!(
            source.stream_info().profile.as_deref(),
            Some(expected.trim()),
            "{}",
            file.display()
        );
    }
    Ok(())
}
