"""worldwalk.stream.webrtc: serving walks to browsers.

The server and its sessions (`server`), the page protocol (`signaling`, `offer`), who gets in
(`admission`), the peer connection (`peer`), what comes back from the page (`input_channel`,
`pose_channel`) and the frames that go out (`video_track`). Recording is asked of `stream.record`;
nothing here is imported by it.
"""
