#!/usr/bin/python3
"""A local RTSP server for crispy-streamer's tests, built on GStreamer's RTSP server.

Run with Debian's /usr/bin/python3 (it has the `gi` bindings). Listens on 127.0.0.1 only.

Mounts:
  /live     live test pattern, H.264 (GOP --gop frames), no audio; one pipeline shared
            by every session
  /each     the same, a pipeline per session (separate cameras)
  /audio    the same with an AAC audio track
  /file     the MP4 given by --file, stream-copied (H.264), played once
  /secure   the live pattern, requiring --user/--password (basic auth)
  /resize   the live pattern at 640x360 that switches to 320x180 after 3 s (new SPS)
  /mjpeg    the live pattern as Motion JPEG (RTP/JPEG), like many cheap IP cameras

Prints "READY <port>" on stdout once it accepts connections. Stop it with SIGTERM.
"""

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def video(args, name="pay0"):
    # x264 repeats SPS/PPS in-band before every IDR; config-interval=0 avoids the payloader
    # repeating them before each slice (FFmpeg would split keyframes). sliced-threads=false
    # keeps one slice per frame.
    return (
        f"videotestsrc is-live=true pattern=ball ! "
        f"video/x-raw,width={args.width},height={args.height},framerate={args.fps}/1 ! "
        f"videoconvert ! "
        f"x264enc tune=zerolatency sliced-threads=false speed-preset=ultrafast "
        f"key-int-max={args.gop} bframes=0 ! video/x-h264,profile=baseline ! "
        f"rtph264pay config-interval=0 name={name} pt=96"
    )


def factory(launch, shared=True):
    f = GstRtspServer.RTSPMediaFactory()
    f.set_launch(f"( {launch} )")
    f.set_shared(shared)
    return f


def allow(f, *roles):
    """Lets `roles` play the mount. Anonymous clients may always see it, so that they get
    401 (and retry with credentials) rather than 404."""
    perms = GstRtspServer.RTSPPermissions()
    for role in set(roles) | {"anonymous"}:
        perms.add_role(role)
        perms.add_permission_for_role(role, "media.factory.access", True)
        perms.add_permission_for_role(role, "media.factory.construct", role in roles)
    f.set_permissions(perms)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--file", help="MP4 (H.264) served on /file")
    p.add_argument("--user", default="viewer")
    p.add_argument("--password", default="s3cret-pass")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--gop", type=int, default=25)
    args = p.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()

    auth = GstRtspServer.RTSPAuth()
    user_token = GstRtspServer.RTSPToken()
    user_token.set_string("media.factory.role", "user")
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), user_token)
    anon = GstRtspServer.RTSPToken()
    anon.set_string("media.factory.role", "anonymous")
    auth.set_default_token(anon)
    server.set_auth(auth)

    live = factory(video(args))
    allow(live, "anonymous", "user")
    mounts.add_factory("/live", live)

    # /live with a pipeline per session, as separate cameras have: several sessions
    # connecting at once to one shared pipeline being built has crashed this server.
    each = factory(video(args), shared=False)
    allow(each, "anonymous", "user")
    mounts.add_factory("/each", each)

    audio = factory(
        video(args)
        + " audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! "
        "avenc_aac ! rtpmp4apay name=pay1 pt=97"
    )
    allow(audio, "anonymous", "user")
    mounts.add_factory("/audio", audio)

    if args.file:
        f = factory(
            f"filesrc location={args.file} ! qtdemux ! h264parse config-interval=-1 ! "
            "rtph264pay config-interval=0 name=pay0 pt=96",
            shared=False,
        )
        allow(f, "anonymous", "user")
        mounts.add_factory("/file", f)

    resize = factory(
        "videotestsrc is-live=true pattern=ball ! videoscale ! "
        f"capsfilter name=size caps=video/x-raw,width={args.width},height={args.height},framerate={args.fps}/1 ! "
        "videoconvert ! x264enc tune=zerolatency sliced-threads=false speed-preset=ultrafast "
        f"key-int-max={args.gop} bframes=0 ! video/x-h264,profile=baseline ! "
        "rtph264pay config-interval=0 name=pay0 pt=96",
        shared=False,
    )

    def on_configure(_factory, media):
        capsfilter = media.get_element().get_by_name("size")

        def shrink():
            caps = Gst.Caps.from_string(
                f"video/x-raw,width={args.width // 2},height={args.height // 2},framerate={args.fps}/1"
            )
            capsfilter.set_property("caps", caps)
            return False

        GLib.timeout_add(3000, shrink)

    resize.connect("media-configure", on_configure)
    allow(resize, "anonymous", "user")
    mounts.add_factory("/resize", resize)

    mjpeg = factory(
        f"videotestsrc is-live=true pattern=ball ! "
        f"video/x-raw,width={args.width},height={args.height},framerate={args.fps}/1 ! "
        "videoconvert ! video/x-raw,format=I420 ! jpegenc quality=75 ! rtpjpegpay name=pay0 pt=26"
    )
    allow(mjpeg, "anonymous", "user")
    mounts.add_factory("/mjpeg", mjpeg)

    secure = factory(video(args))
    allow(secure, "user")
    mounts.add_factory("/secure", secure)

    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
    print(f"READY {args.port}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
