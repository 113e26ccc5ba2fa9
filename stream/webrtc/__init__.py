"""worldwalk.stream.webrtc: serving walks to browsers.

The server (`server`, its settings in `config`), the players' sessions from start to end
(`sessions`: `PlayerStart`, `PlayerSessions`), each browser at the server (`guest`), the page
protocol (`signaling`, `offer`), who gets in (`admission`), the peer connection (`peer`), what
comes back from the page (`input_channel`, `pose_channel`) and the frames that go out
(`video_track`). Recording is asked of `stream.record`; nothing here is imported by it.
"""
