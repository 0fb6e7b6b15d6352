"""Voice simulation: scenarios spoken through the real VAD, STT and TTS path, offline.

A scenario with `io: voice` runs like a text scenario (same routing, store, factory,
SessionManager, tools, expectations), but each user turn is speech audio:

- `sim.voice.io`: LiveKit `io.AudioInput` / `io.AudioOutput` with no room. A `Mic`
  streams 10-50 ms frames of WAV fixtures, silence and low-level noise on a `SimClock`
  (real time, or accelerated in tests); a `SimAudioOutput` plays the agent's TTS
  frames on the same clock (pause / resume / clear like a real sink), recording every
  segment with timestamps, duration played, interruptions and gaps.
- `sim.voice.runner`: the `AgentSession` gets those I/O objects, the process's silero
  VAD (turn detection by VAD; loaded once per test process, before any session is
  prepared, as a worker's prewarm loads it) and the agent's real
  `livekit-plugins-openai` STT and TTS (the factory wraps them as in production: one
  VAD stream per session, the STT segmenting on its events, `app.agents.audio`), whose clients the factory takes from `prepare_session(stt_client=, tts_client=)`
  and which talk to `sim.fake_openai.FakeOpenAI`: `/audio/transcriptions`
  answers the turn's transcript, `/audio/speech` a tone as long as the text.
- `sim.voice.expect`: per step, the VAD saw the speech (user speaking, then not), the
  transcript reached the model, every assistant message played audio, interruptions;
  per session, the latency metrics stored on the record (`SessionRecord.metrics`).
- `sim.voice.make_fixtures`: espeak-ng + sox script that writes `fixtures/*.wav`
  (16 kHz mono, committed) for every voice scenario turn.
- `sim.bench.voice_density`: N concurrent real-time voice sessions in one process.

The scenario format's voice blocks are in `sim.voice.spec`.
"""
