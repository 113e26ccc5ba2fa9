"""worldwalk.stream.record: walks written down and played back.

The recorder (`recorder`: its video half in `video_encoding`, its log's waiting lines in
`pending_lines`), a session's log and its schema (`session_log`, `log_schema`), a
recording attached to a live session (`session_recording`) or continued in another process
(`recording_resume`), and the replay that renders a log, an action string or a path (`replay`).
It imports neither `stream.webrtc` nor `stream.cluster`.
"""
