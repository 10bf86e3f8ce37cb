//! The FFmpeg wrapper: every `unsafe` block of the project is in this module.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::{Once, OnceLock};

use bytes::Bytes;
use ffmpeg_next as ffmpeg;
use ffmpeg_next::ffi as sys;

static INIT: Once = Once::new();

pub(crate) fn init() {
    INIT.call_once(|| {
        // ffmpeg::init only registers devices/network; failure leaves plain file reading intact.
        if let Err(e) = ffmpeg::init() {
            tracing::warn!(target: "ffmpeg", "ffmpeg init: {e}");
        }
        // SAFETY: setting the global log level is a plain int store.
        unsafe { sys::av_log_set_level(sys::AV_LOG_WARNING) };
        route_logs();
    });
}

/// Fixes glibc's mmap threshold at 128 KiB (see `crate::release_large_blocks_eagerly`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn release_large_blocks_eagerly() {
    // SAFETY: mallopt only changes allocator parameters; M_MMAP_THRESHOLD with a value within
    // glibc's limits is always accepted, and blocks allocated before keep working.
    let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) };
    if ok != 1 {
        tracing::debug!("mallopt(M_MMAP_THRESHOLD) was refused");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn release_large_blocks_eagerly() {}

/// How bindgen spells the `va_list` argument on this target.
#[cfg(all(target_arch = "x86_64", not(target_os = "windows")))]
type VaList = *mut sys::__va_list_tag;

#[cfg(all(target_arch = "x86_64", not(target_os = "windows")))]
fn route_logs() {
    // SAFETY: `log_callback` has the exact signature FFmpeg expects, is thread-safe (it only
    // formats into a stack buffer and emits a tracing event) and lives for the whole program.
    unsafe { sys::av_log_set_callback(Some(log_callback)) };
}

/// Elsewhere `va_list` has another ABI shape and FFmpeg's lines cannot be formatted here:
/// FFmpeg's own logging is silenced (it could print URLs with passwords), so its diagnostics
/// are lost on those targets; our errors still carry FFmpeg's error codes.
#[cfg(not(all(target_arch = "x86_64", not(target_os = "windows"))))]
fn route_logs() {
    // SAFETY: setting the global log level is a plain int store.
    unsafe { sys::av_log_set_level(sys::AV_LOG_QUIET) };
}

/// Formats one FFmpeg log line and re-emits it through `tracing`.
#[cfg(all(target_arch = "x86_64", not(target_os = "windows")))]
unsafe extern "C" fn log_callback(
    avcl: *mut c_void,
    level: c_int,
    fmt: *const c_char,
    args: VaList,
) {
    // SAFETY: reading FFmpeg's global level is a plain int load.
    if level > unsafe { sys::av_log_get_level() } {
        return;
    }
    let mut buf = [0 as c_char; 1024];
    let mut print_prefix: c_int = PRINT_PREFIX.with(std::cell::Cell::get);
    // SAFETY: `buf` is writable for its whole length, which we pass; FFmpeg NUL-terminates the
    // output (truncating if needed); `avcl`, `fmt` and `args` are forwarded untouched from FFmpeg.
    let written = unsafe {
        sys::av_log_format_line2(
            avcl,
            level,
            fmt,
            args,
            buf.as_mut_ptr(),
            buf.len() as c_int,
            &mut print_prefix,
        )
    };
    PRINT_PREFIX.with(|p| p.set(print_prefix));
    if written < 0 {
        return;
    }
    // SAFETY: av_log_format_line2 always NUL-terminates within `buf`.
    let piece = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
    // FFmpeg may log one line in several calls: collect pieces until the newline.
    let line = PARTIAL.with(|p| {
        let mut partial = p.borrow_mut();
        partial.push_str(&piece);
        if partial.ends_with('\n') {
            Some(std::mem::take(&mut *partial))
        } else {
            if partial.len() > 4096 {
                // A runaway line without newline: drop it rather than emit a fragment that
                // might cut a URL (and its password) in half.
                partial.clear();
            }
            None
        }
    });
    let Some(line) = line else { return };
    // FFmpeg prints URLs as given, passwords included: never let one through.
    let line = crispy_core::redact::redact_urls(&line);
    let line = line.trim_end();
    if line.is_empty() {
        return;
    }
    if level <= sys::AV_LOG_ERROR && capture_error(line) {
        // The caller puts it into its error: logged once, there.
        emit(tracing::Level::DEBUG, line);
        return;
    }
    let level = match level {
        l if l <= sys::AV_LOG_ERROR => tracing::Level::ERROR,
        l if l <= sys::AV_LOG_WARNING => tracing::Level::WARN,
        l if l <= sys::AV_LOG_INFO => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    };
    // Printed at every camera connect by the short probe crispy asks for (the stream's
    // timestamps give the frame rate; nothing for a user to change).
    let level = match line.contains("not enough frames to estimate rate") {
        true => tracing::Level::DEBUG,
        false => level,
    };
    emit(level, line);
}

/// Logs one of FFmpeg's lines (target `ffmpeg`), naming the source this thread works for,
/// if any ([`log_source`]).
fn emit(level: tracing::Level, line: &str) {
    use tracing::Level;
    LOG_SOURCE.with_borrow(|source| match (level, source.as_deref()) {
        (Level::ERROR, Some(source)) => tracing::error!(target: "ffmpeg", source, "{line}"),
        (Level::ERROR, None) => tracing::error!(target: "ffmpeg", "{line}"),
        (Level::WARN, Some(source)) => tracing::warn!(target: "ffmpeg", source, "{line}"),
        (Level::WARN, None) => tracing::warn!(target: "ffmpeg", "{line}"),
        (Level::INFO, Some(source)) => tracing::info!(target: "ffmpeg", source, "{line}"),
        (Level::INFO, None) => tracing::info!(target: "ffmpeg", "{line}"),
        (_, Some(source)) => tracing::debug!(target: "ffmpeg", source, "{line}"),
        (_, None) => tracing::debug!(target: "ffmpeg", "{line}"),
    })
}

/// Until the guard is dropped, FFmpeg's log lines from this thread carry `source` = `id`:
/// with many cameras in one process, a line such as "Packet corrupt" then says whose.
/// (Lines from FFmpeg's own threads, a decoder's frame threads, carry none.)
pub fn log_source(id: &str) -> LogSourceGuard {
    LogSourceGuard(LOG_SOURCE.with_borrow_mut(|s| s.replace(id.to_owned())))
}

/// Restores the thread's earlier log source when dropped (see [`log_source`]).
#[derive(Debug)]
#[must_use = "the source is named only while the guard lives"]
pub struct LogSourceGuard(Option<String>);

impl Drop for LogSourceGuard {
    fn drop(&mut self) {
        let earlier = self.0.take();
        LOG_SOURCE.with_borrow_mut(|s| *s = earlier);
    }
}

/// Error lines kept by one [`with_ffmpeg_errors`] call at most.
const CAPTURED_LINES: usize = 8;

/// Keeps FFmpeg's error line for [`with_ffmpeg_errors`], if it is listening on this thread
/// and has room; false when the line must be logged as usual.
fn capture_error(line: &str) -> bool {
    CAPTURED.with(|c| match c.borrow_mut().as_mut() {
        Some(lines) if lines.len() < CAPTURED_LINES => {
            lines.push(line.to_owned());
            true
        }
        _ => false,
    })
}

/// `line` without FFmpeg's "[context @ 0x…] " prefixes: the caller names the source.
fn without_context(line: &str) -> &str {
    let mut text = line;
    while let Some((_, rest)) = text.strip_prefix('[').and_then(|t| t.split_once("] ")) {
        text = rest;
    }
    text
}

/// Ends a capture when dropped (also if the call panics), restoring an outer one.
struct Capture(Option<Vec<String>>);

impl Capture {
    fn start() -> Self {
        Self(CAPTURED.with(|c| c.borrow_mut().replace(Vec::new())))
    }

    fn lines(&mut self) -> Vec<String> {
        CAPTURED
            .with(|c| c.borrow_mut().replace(Vec::new()))
            .unwrap_or_default()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let outer = self.0.take();
        CAPTURED.with(|c| *c.borrow_mut() = outer);
    }
}

/// Runs `f`, holding back the error lines FFmpeg logs on this thread meanwhile (URLs
/// redacted): FFmpeg's error codes are generic ("Invalid argument"), its log says what was
/// wrong ("No such filter: 'x'"). On failure the lines come with the error, without their
/// "[context @ 0x…]" prefixes, for the caller's message (logged once, there); on success
/// they are logged as usual. Lines from FFmpeg's other threads are logged as usual. Only
/// where FFmpeg's log is routed into `tracing` (x86-64 Unix) are there lines to capture.
pub(crate) fn with_ffmpeg_errors<T, E>(
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, (E, Vec<String>)> {
    let mut capture = Capture::start();
    let result = f();
    let lines = capture.lines();
    drop(capture);
    match result {
        Ok(v) => {
            for line in lines {
                emit(tracing::Level::ERROR, &line);
            }
            Ok(v)
        }
        Err(e) => Err((
            e,
            lines
                .iter()
                .map(|l| without_context(l).to_owned())
                .collect(),
        )),
    }
}

thread_local! {
    /// Error lines kept for [`with_ffmpeg_errors`]; `None` when nobody listens.
    static CAPTURED: std::cell::RefCell<Option<Vec<String>>> =
        const { std::cell::RefCell::new(None) };
    /// FFmpeg's "start of a new line" flag, kept between calls as its own logger does.
    static PRINT_PREFIX: std::cell::Cell<c_int> = const { std::cell::Cell::new(1) };
    /// The start of an FFmpeg log line whose newline has not arrived yet.
    static PARTIAL: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    /// The source this thread reads for, named in FFmpeg's log lines ([`log_source`]).
    static LOG_SOURCE: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Raw facts of a stream's codec parameters that ffmpeg-next does not expose.
pub(crate) struct RawParams {
    pub(crate) width: i32,
    pub(crate) height: i32,
    pub(crate) profile: Option<String>,
    pub(crate) extradata: Bytes,
}

pub(crate) fn raw_params(params: &ffmpeg::codec::Parameters) -> RawParams {
    // SAFETY: `params` wraps a valid AVCodecParameters owned by the open stream for at least
    // the duration of this call; we only read plain fields and copy the extradata out.
    unsafe {
        let p = &*params.as_ptr();
        let extradata = if p.extradata.is_null() || p.extradata_size <= 0 {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(std::slice::from_raw_parts(
                p.extradata,
                p.extradata_size as usize,
            ))
        };
        let profile = if p.profile == sys::FF_PROFILE_UNKNOWN {
            profile_from_extradata(p.codec_id, &extradata).unwrap_or(p.profile)
        } else {
            p.profile
        };
        let name = sys::avcodec_profile_name(p.codec_id, profile);
        let profile =
            (!name.is_null()).then(|| CStr::from_ptr(name).to_string_lossy().into_owned());
        RawParams {
            width: p.width,
            height: p.height,
            profile,
            extradata,
        }
    }
}

/// FFmpeg's name of the H.264 profile of the first SPS in Annex B parameter sets (what
/// libx264 puts in its extradata, which FFmpeg 5.1's wrapper does not report as a profile).
pub(crate) fn h264_profile_of_annexb(extradata: &[u8]) -> Option<String> {
    let sps = crispy_core::annexb::annexb_nals(extradata)
        .find(|n| n.first().is_some_and(|h| h & 0x1f == 7))?;
    let [_, profile_idc, constraints, ..] = *sps else {
        return None;
    };
    let profile = profile_from_extradata(
        sys::AVCodecID::AV_CODEC_ID_H264,
        &[1, profile_idc, constraints],
    )?;
    // SAFETY: `avcodec_profile_name` only looks the pair up in libavcodec's static tables;
    // it returns null or a pointer to a static NUL-terminated string, copied out at once.
    unsafe {
        let name = sys::avcodec_profile_name(sys::AVCodecID::AV_CODEC_ID_H264, profile);
        (!name.is_null()).then(|| CStr::from_ptr(name).to_string_lossy().into_owned())
    }
}

/// The profile FFmpeg's decoder would report for a stream whose stream information was not
/// read (see [`open_file`]), from its `avcC` or `hvcC` record; `None` for anything else.
///
/// H.264 follows `ff_h264_get_profile`: `profile_idc`, plus the "constrained" flag for Baseline
/// with `constraint_set1_flag` and the "intra" flag for High 10, 4:2:2 and 4:4:4 with
/// `constraint_set3_flag`. H.265 is `general_profile_idc`.
fn profile_from_extradata(codec: sys::AVCodecID, extradata: &[u8]) -> Option<c_int> {
    match (codec, extradata) {
        (sys::AVCodecID::AV_CODEC_ID_H264, [1, profile_idc, constraints, ..]) => {
            let idc = c_int::from(*profile_idc);
            let flag = |n: u8| constraints & (0x80 >> n) != 0;
            Some(match idc {
                sys::FF_PROFILE_H264_BASELINE if flag(1) => idc | sys::FF_PROFILE_H264_CONSTRAINED,
                sys::FF_PROFILE_H264_HIGH_10
                | sys::FF_PROFILE_H264_HIGH_422
                | sys::FF_PROFILE_H264_HIGH_444_PREDICTIVE
                    if flag(3) =>
                {
                    idc | sys::FF_PROFILE_H264_INTRA
                }
                _ => idc,
            })
        }
        (sys::AVCodecID::AV_CODEC_ID_HEVC, [1, general, ..]) => Some(c_int::from(general & 0x1f)),
        _ => None,
    }
}

/// `start_time_realtime` of an input (µs since the Unix epoch), when FFmpeg knows it.
pub(crate) fn start_time_realtime(input: &ffmpeg::format::context::Input) -> Option<i64> {
    // SAFETY: `input` wraps a valid, open AVFormatContext for the duration of this call; we
    // read one plain integer field.
    let value = unsafe { (*input.as_ptr()).start_time_realtime };
    (value != sys::AV_NOPTS_VALUE && value > 0).then_some(value)
}

/// The extradata (Annex B SPS/PPS with `GLOBAL_HEADER`) of an opened encoder.
pub(crate) fn encoder_extradata(encoder: &ffmpeg::encoder::Video) -> Bytes {
    // SAFETY: `encoder` wraps a valid, opened AVCodecContext; extradata/extradata_size are
    // set by the encoder at open and only read here, copied out.
    unsafe {
        let ctx = &*encoder.as_ptr();
        if ctx.extradata.is_null() || ctx.extradata_size <= 0 {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(std::slice::from_raw_parts(
                ctx.extradata,
                ctx.extradata_size as usize,
            ))
        }
    }
}

/// libavdevice, loaded on first use rather than linked: linking it (and libavfilter behind it)
/// adds about 80 shared libraries to every start, for the `lavfi:` sources alone.
static DEVICES: OnceLock<Result<libloading::Library, String>> = OnceLock::new();

/// Loads libavdevice (the one matching the linked libavformat) and registers its devices.
fn register_devices() -> Result<(), String> {
    DEVICES
        .get_or_init(|| {
            // SAFETY: avformat_version only returns a constant.
            let major = unsafe { sys::avformat_version() } >> 16;
            let names = [
                format!("libavdevice.so.{major}"),
                "libavdevice.so".to_owned(),
            ];
            let mut last = String::new();
            for name in &names {
                // SAFETY: libavdevice's initialisers only set up static tables; loading it runs
                // nothing else. The library is kept loaded for the rest of the process.
                match unsafe { libloading::Library::new(name) } {
                    Ok(lib) => {
                        // SAFETY: `avdevice_register_all` takes no arguments and returns
                        // nothing (libavdevice's public API); it registers the device formats
                        // with the already loaded libavformat, and may be called repeatedly.
                        unsafe {
                            let register: libloading::Symbol<'_, unsafe extern "C" fn()> = lib
                                .get(b"avdevice_register_all\0")
                                .map_err(|e| format!("{name}: {e}"))?;
                            register();
                        }
                        return Ok(lib);
                    }
                    Err(e) => last = format!("{name}: {e}"),
                }
            }
            Err(last)
        })
        .as_ref()
        .map(|_| ())
        .map_err(Clone::clone)
}

/// FFmpeg's `lavfi` input device (filter graphs as sources); an error names why libavdevice
/// could not be loaded.
pub(crate) fn lavfi_format() -> Result<ffmpeg::format::Input, String> {
    register_devices()?;
    // SAFETY: av_find_input_format takes a NUL-terminated name and returns a pointer to a
    // static, immutable format description (or null); wrapping it does not take ownership.
    unsafe {
        let fmt = sys::av_find_input_format(c"lavfi".as_ptr());
        if fmt.is_null() {
            return Err("libavdevice has no lavfi input device".to_owned());
        }
        Ok(ffmpeg::format::Input::wrap(fmt as *mut _))
    }
}

/// Opens a media file and reads its stream information, as `ffmpeg::format::input` does, but
/// without libavformat's H.264 parser for MP4/MOV files, and for an MP4/MOV file whose only
/// video stream is H.264 or H.265 without reading stream information at all.
///
/// The MOV demuxer asks for that parser on H.264 only to detect interlaced field order; it
/// re-splits every packet into NAL units, which costs about an eighth of the reader thread in
/// copy mode. The container already gives each sample's timing, size and keyframe flag, and
/// nothing here uses the field order, so MP4/MOV files are read without it.
///
/// `avformat_find_stream_info` decodes the first frame of such a file only to learn its pixel
/// format and profile (a 1080p decoder set up and one frame decoded: about 6 ms, a tenth of a
/// short file's whole run). The MOV header already gives everything copy mode reads: codec,
/// dimensions, `avcC`/`hvcC`, time base, frame rate, duration and frame count; the profile is
/// read from the `avcC`/`hvcC` record instead (`profile_from_extradata`). Files with several
/// video streams, another codec, missing dimensions or no duration in the header (fragmented
/// MP4, whose duration the analysis estimates) still get the full analysis, so stream
/// selection and the file clock are unchanged.
pub(crate) fn open_file(
    path: &std::path::Path,
) -> Result<ffmpeg::format::context::Input, ffmpeg::Error> {
    open_path(path, true)
}

/// Opens `path` as `ffmpeg::format::input` does (the streams analysed, the parsers on), but
/// by the path's bytes: ffmpeg-next's own function panics on a name that is not UTF-8. For
/// decoding (transcode mode).
pub(crate) fn open_file_analysed(
    path: &std::path::Path,
) -> Result<ffmpeg::format::context::Input, ffmpeg::Error> {
    open_path(path, false)
}

/// [`open_file`], with `copy_shortcuts` (no H.264 parser, no stream analysis where the MOV
/// header suffices) or without.
fn open_path(
    path: &std::path::Path,
    copy_shortcuts: bool,
) -> Result<ffmpeg::format::context::Input, ffmpeg::Error> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| ffmpeg::Error::InvalidData)?;
    let mut ctx: *mut sys::AVFormatContext = std::ptr::null_mut();
    // SAFETY: `ctx` starts null, so avformat_open_input allocates the context; `path` is a
    // NUL-terminated string that outlives the call; no format or options are forced.
    let opened = unsafe {
        sys::avformat_open_input(
            &mut ctx,
            path.as_ptr(),
            std::ptr::null(),
            std::ptr::null_mut(),
        )
    };
    if opened != 0 {
        // avformat_open_input frees the context itself on failure.
        return Err(ffmpeg::Error::from(opened));
    }
    // SAFETY: `ctx` is the valid context avformat_open_input just returned; its `iformat` points
    // to a static format description with a NUL-terminated name, and its `streams` array holds
    // `nb_streams` valid streams, each with codec parameters, all owned by the context and only
    // read here while it is alive. Setting a flag before avformat_find_stream_info is how the
    // API is meant to be used; skipping that call is allowed (it only fills in what the header
    // left unknown). On failure the context is closed exactly once here; on success ownership
    // moves into the returned `Input`, which closes it on drop.
    unsafe {
        let format = (*ctx).iformat;
        let mov = copy_shortcuts
            && !format.is_null()
            && CStr::from_ptr((*format).name)
                .to_bytes()
                .starts_with(b"mov,");
        if mov {
            (*ctx).flags |= sys::AVFMT_FLAG_NOPARSE as c_int;
        }
        // The streams as avformat_open_input left them: `nb_streams` valid pointers, each
        // with its codec parameters.
        let streams: &[*mut sys::AVStream] = if (*ctx).streams.is_null() {
            &[]
        } else {
            std::slice::from_raw_parts((*ctx).streams, (*ctx).nb_streams as usize)
        };
        let header_suffices = mov
            && (*ctx).duration > 0
            && header_describes_video(streams.iter().map(|s| &*(**s).codecpar));
        let found = if header_suffices {
            0
        } else {
            sys::avformat_find_stream_info(ctx, std::ptr::null_mut())
        };
        if found < 0 {
            sys::avformat_close_input(&mut ctx);
            return Err(ffmpeg::Error::from(found));
        }
        Ok(ffmpeg::format::context::Input::wrap(ctx))
    }
}

/// Whether a MOV header alone describes the file's video well enough for copy mode: exactly
/// one video stream, H.264 or H.265, with dimensions and a decoder configuration record.
fn header_describes_video<'a>(streams: impl Iterator<Item = &'a sys::AVCodecParameters>) -> bool {
    let mut video = streams.filter(|p| p.codec_type == sys::AVMediaType::AVMEDIA_TYPE_VIDEO);
    match (video.next(), video.next()) {
        (Some(p), None) => {
            matches!(
                p.codec_id,
                sys::AVCodecID::AV_CODEC_ID_H264 | sys::AVCodecID::AV_CODEC_ID_HEVC
            ) && p.width > 0
                && p.height > 0
                && p.extradata_size > 0
                && !p.extradata.is_null()
        }
        _ => false,
    }
}

/// Owns a demuxed packet so its buffer can back a [`Bytes`] without a copy.
struct PacketBuffer(ffmpeg::Packet);

impl AsRef<[u8]> for PacketBuffer {
    fn as_ref(&self) -> &[u8] {
        self.0.data().unwrap_or(&[])
    }
}

/// Whether the demuxer marked `packet` as decoded but never shown (`AV_PKT_FLAG_DISCARD`: the
/// MOV demuxer's mark for frames before an edit list's start). ffmpeg-next's flags omit it.
pub(crate) fn is_discarded(packet: &ffmpeg::Packet) -> bool {
    // SAFETY: `as_ptr` points at the packet's live AVPacket, borrowed for this read only.
    let flags = unsafe { (*ffmpeg::packet::Ref::as_ptr(packet)).flags };
    flags & sys::AV_PKT_FLAG_DISCARD != 0
}

/// Turns a packet into `Bytes` sharing FFmpeg's reference-counted buffer.
pub(crate) fn packet_bytes(packet: ffmpeg::Packet) -> Bytes {
    Bytes::from_owner(PacketBuffer(packet))
}

/// An owned swscale context that may move to the reader thread.
pub(crate) struct Scaler(pub(crate) ffmpeg::software::scaling::Context);

// SAFETY: an SwsContext has no thread affinity: libswscale keeps no thread-local state tied to
// it. `Scaler` owns its context exclusively and only hands out `&mut` access, so moving it to
// another thread can never lead to concurrent use.
unsafe impl Send for Scaler {}

/// Moves every packet the encoder has ready into `queue`; a packet without a duration gets
/// `default_duration`.
pub(crate) fn drain_encoder(
    encoder: &mut ffmpeg::encoder::Video,
    default_duration: i64,
    queue: &mut std::collections::VecDeque<crispy_core::EncodedPacket>,
) {
    let mut packet = ffmpeg::Packet::empty();
    while encoder.receive_packet(&mut packet).is_ok() {
        let pts = packet.pts().unwrap_or(0);
        let dts = packet.dts().unwrap_or(pts);
        let keyframe = packet.is_key();
        let duration = Some(packet.duration())
            .filter(|d| *d > 0)
            .unwrap_or(default_duration);
        let data = packet_bytes(std::mem::replace(&mut packet, ffmpeg::Packet::empty()));
        queue.push_back(crispy_core::EncodedPacket {
            data,
            pts,
            dts,
            duration,
            keyframe,
            discard: false,
        });
    }
}
