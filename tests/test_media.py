"""runner.studio (probe, compose, edit, art) on real files: lengths, formats, stems,
loudness, video, determinism.

Everything is measured by decoding with the same ffmpeg (there is no ffprobe): probe is
checked first against WAV files written here with the standard library, so that the
other tests can trust it.
"""

from __future__ import annotations

import array
import math
import os
import re
import subprocess
import sys
import wave
from pathlib import Path

import pytest

from runner.studio import art, compose, edit
from runner.studio.ffmpeg import MediaError, ffmpeg_exe
from runner.studio.probe import MediaInfo, probe, read_pcm

MP3_FRAME = 1152 / 44100  # one MPEG-1 Layer III frame: the gapless tolerance
AAC_FRAME = 1024 / 44100
REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- helpers


def write_wav(
    path: Path,
    seconds: float,
    *,
    rate: int = 44100,
    channels: int = 2,
    freq: float = 440.0,
    amplitude: float = 0.3,
) -> Path:
    """A sine of exactly round(seconds * rate) frames, written by the standard library."""
    frames = round(seconds * rate)
    samples = array.array("h")
    for n in range(frames):
        v = int(amplitude * 32767 * math.sin(2 * math.pi * freq * n / rate))
        samples.extend([v] * channels)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return path


def pcm(path: Path, rate: int = 44100, channels: int = 2) -> array.array[int]:
    return array.array("h", read_pcm(path, sample_rate=rate, channels=channels))


def rms(samples: array.array[int] | list[int]) -> float:
    return math.sqrt(sum(x * x for x in samples) / max(1, len(samples)))


def filtered(path: Path, afilter: str, rate: int = 44100) -> array.array[int]:
    """``path`` through an ffmpeg audio filter, decoded to mono s16."""
    out = subprocess.run(
        [
            ffmpeg_exe(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            str(path),
            "-af",
            afilter,
            "-ac",
            "1",
            "-ar",
            str(rate),
            "-f",
            "s16le",
            "-",
        ],
        capture_output=True,
        check=True,
    ).stdout
    return array.array("h", out)


def band_share(path: Path, lo: float | None, hi: float | None) -> float:
    """Share of the energy of ``path`` below ``hi`` Hz or above ``lo`` Hz (one of them),
    through steep cascaded filters: 36 dB per octave."""
    chain = [f"highpass=f={lo}"] * 3 if lo else [f"lowpass=f={hi}"] * 3
    whole = rms(filtered(path, "anull"))
    return (rms(filtered(path, ",".join(chain))) / whole) ** 2


def outside(path: Path, lo: float, hi: float) -> float:
    """Share of the energy of ``path`` below ``lo`` Hz plus above ``hi`` Hz."""
    return band_share(path, None, lo) + band_share(path, hi, None)


def flatness(path: Path) -> float:
    """Mean spectral flatness (0 = pure tones, 1 = white noise) over 2048-sample frames."""
    with_file = path.with_suffix(".flatness.txt")
    subprocess.run(
        [
            ffmpeg_exe(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            str(path),
            "-af",
            "aspectralstats=win_size=2048:measure=flatness,"
            f"ametadata=mode=print:file={with_file.name}",
            "-f",
            "null",
            "-",
        ],
        cwd=path.parent,
        check=True,
    )
    values = [float(v) for v in re.findall(r"flatness=([0-9.e+-]+)", with_file.read_text())]
    return sum(values) / len(values)


def pitch(samples: array.array[int] | list[int], rate: int) -> float:
    """Fundamental (Hz) by normalised autocorrelation: the first peak within 10% of the
    highest (so that an octave below never wins), refined by a parabola through it."""
    n = len(samples)
    score = {}
    for lag in range(rate // 1200 - 1, rate // 250 + 2):
        a, b = samples[: n - lag], samples[lag:]
        den = math.sqrt(sum(x * x for x in a) * sum(x * x for x in b))
        score[lag] = sum(x * y for x, y in zip(a, b, strict=True)) / den if den else 0.0
    lags = sorted(score)[1:-1]
    best = max(score[k] for k in lags)
    lag = next(
        k
        for k in lags
        if score[k] >= 0.9 * best and score[k] >= score[k - 1] and score[k] >= score[k + 1]
    )
    left, mid, right = score[lag - 1], score[lag], score[lag + 1]
    curve = left - 2 * mid + right
    shift = 0.5 * (left - right) / curve if curve else 0.0
    return rate / (lag + shift)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("studio")


@pytest.fixture(scope="module")
def take30(studio: Path) -> Path:
    """A 30 s MP3 take: the length that the extend example is about."""
    out = studio / "take30.mp3"
    compose.synth(out, seed="take30", duration=30.0, style="indie folk")
    return out


@pytest.fixture(scope="module")
def take6(studio: Path) -> tuple[Path, Path]:
    """A 6 s WAV take and the folder of its stems."""
    out = studio / "take6.wav"
    stems = studio / "take6_stems"
    compose.synth(out, seed="take6", duration=6.0, style="synth pop", stems_dir=stems)
    return out, stems


# ----------------------------------------------------------------------------- probe


def test_probe_wav_of_known_length(tmp_path: Path) -> None:
    info = probe(write_wav(tmp_path / "a.wav", 1.5))
    assert info == MediaInfo(
        duration=1.5,
        format="wav",
        audio_codec="pcm_s16le",
        sample_rate=44100,
        channels=2,
        video_codec=None,
        width=None,
        height=None,
        bitrate_kbps=1411,
    )


def test_probe_mono_wav_at_another_rate_is_exact(tmp_path: Path) -> None:
    info = probe(write_wav(tmp_path / "m.wav", 0.8, rate=22050, channels=1))
    assert (info.duration, info.sample_rate, info.channels) == (0.8, 22050, 1)


def test_probe_mp3_honours_the_gapless_header(tmp_path: Path) -> None:
    src = write_wav(tmp_path / "b.wav", 2.0)
    edit.transcode(src, tmp_path / "b.mp3", fmt="mp3")
    info = probe(tmp_path / "b.mp3")
    # Without the LAME header a decoder would count encoder delay and padding (~50 ms).
    assert abs(info.duration - 2.0) <= MP3_FRAME
    assert (info.format, info.audio_codec, info.bitrate_kbps) == ("mp3", "mp3", 192)


def test_probe_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match=r"^probe .*nope\.wav: no such file$"):
        probe(tmp_path / "nope.wav")


def test_probe_rejects_a_file_that_is_not_media(tmp_path: Path) -> None:
    bad = tmp_path / "notes.mp3"
    bad.write_text("these are not sounds\n")
    with pytest.raises(MediaError) as err:
        probe(bad)
    message = str(err.value)
    assert message.startswith(f"probe {bad}: ffmpeg: ")
    assert "Invalid data found" in message
    assert "\n" not in message


# ----------------------------------------------------------------------------- synth


def test_synth_30s_mp3(take30: Path) -> None:
    info = probe(take30)
    assert abs(info.duration - 30.0) <= MP3_FRAME
    assert (info.format, info.audio_codec, info.sample_rate, info.channels, info.bitrate_kbps) == (
        "mp3",
        "mp3",
        44100,
        2,
        192,
    )


@pytest.mark.parametrize(("suffix", "codec"), [(".wav", "pcm_s16le"), (".flac", "flac")])
def test_synth_lossless_formats_are_sample_exact(tmp_path: Path, suffix: str, codec: str) -> None:
    out = tmp_path / f"t{suffix}"
    compose.synth(out, seed="fmt", duration=3.25)
    info = probe(out)
    assert (info.duration, info.audio_codec, info.sample_rate, info.channels) == (
        3.25,
        codec,
        44100,
        2,
    )


def test_synth_stems_have_the_take_length_and_add_up_to_it(take6: tuple[Path, Path]) -> None:
    take, stems = take6
    names = sorted(p.name for p in stems.iterdir())
    assert names == ["bass.wav", "drums.wav", "keyboard.wav", "vocals.wav"]
    mix = pcm(take)
    parts = [pcm(stems / name) for name in names]
    assert all(len(p) == len(mix) for p in parts)
    diff = [m - a - b - c - d for m, a, b, c, d in zip(mix, *parts, strict=True)]
    # Each stem is rounded to 16 bits on its own: at most 4 x 0.5 LSB apart.
    assert max(map(abs, diff)) <= 2
    assert rms(mix) > 1000


def test_synth_instrumental_has_no_vocals(tmp_path: Path) -> None:
    compose.synth(
        tmp_path / "i.wav",
        seed="inst",
        duration=2.0,
        instrumental=True,
        stems_dir=tmp_path / "stems",
    )
    compose.synth(tmp_path / "v.wav", seed="inst", duration=2.0)
    assert sorted(p.stem for p in (tmp_path / "stems").iterdir()) == ["bass", "drums", "keyboard"]
    # The vocal band (measured at 400-1600 Hz, where the filters' skirts let little of the
    # other layers through) holds a few per cent of the instrumental, a third of the song.
    instrumental = 1 - outside(tmp_path / "i.wav", 400, 1600)
    sung = 1 - outside(tmp_path / "v.wav", 400, 1600)
    assert instrumental < 0.1 < 0.2 < sung


def test_synth_layers_sit_in_their_bands(take6: tuple[Path, Path]) -> None:
    _, stems = take6
    assert band_share(stems / "bass.wav", 300, None) < 0.05
    assert outside(stems / "vocals.wav", 280, 2200) < 0.05
    assert outside(stems / "keyboard.wav", 1900, 5200) < 0.05
    # Drums: a kick at the bottom and noise at the top, nothing in the middle.
    assert outside(stems / "drums.wav", 400, 4500) > 0.9


def test_synth_sounds_like_music_not_noise(take6: tuple[Path, Path], tmp_path: Path) -> None:
    take, _ = take6
    noise = tmp_path / "noise.wav"
    subprocess.run(
        [
            ffmpeg_exe(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "anoisesrc=d=3:a=0.3:seed=1",
            str(noise),
        ],
        check=True,
    )
    # Tonal: the spectrum is peaks, not a plateau.
    assert flatness(take) < 0.3 < flatness(noise)


def test_synth_lead_sings_the_planned_melody(take6: tuple[Path, Path]) -> None:
    _, stems = take6
    plan = compose._plan("take6", "synth pop")
    rate = 22050
    lead = pcm(stems / "vocals.wav", rate=rate, channels=1)
    checked = hits = 0
    for onset, length, midi in plan.lead:
        start = round((onset * plan.step / 44100 + 0.03) * rate)
        if length < 3 or start + 1024 > len(lead):
            continue
        expected = 440.0 * 2 ** ((midi - 69) / 12)
        checked += 1
        hits += abs(pitch(lead[start : start + 1024], rate) / expected - 1) < 0.03
        if checked == 6:
            break
    assert checked >= 3
    assert hits >= checked - 1


def test_synth_style_steers_tempo_and_mode() -> None:
    seeds = [f"s{n}" for n in range(12)]
    assert all(compose._plan(s, "punk rock").bpm >= 117 for s in seeds)
    assert all(compose._plan(s, "slow ballad").bpm <= 97 for s in seeds)
    assert all(compose._plan(s, "sad piano").minor for s in seeds)
    assert len({round(compose._plan(s, "").bpm) for s in seeds}) > 6


def test_synth_different_seeds_make_different_music(tmp_path: Path) -> None:
    compose.synth(tmp_path / "a.wav", seed="one", duration=1.0)
    compose.synth(tmp_path / "b.wav", seed="two", duration=1.0)
    compose.synth(tmp_path / "c.wav", seed="one", duration=1.0, style="jazz")
    blobs = {(tmp_path / n).read_bytes() for n in ("a.wav", "b.wav", "c.wav")}
    assert len(blobs) == 3


def test_synth_keeps_user_text_out_of_the_filter_graph(tmp_path: Path) -> None:
    hostile = "x'];[a]amovie=/etc/passwd[b];[b]anull,\\:'"
    out = tmp_path / "-odd [name];x.wav"
    compose.synth(out, seed=hostile, duration=0.5, style=hostile)
    assert probe(out).duration == 0.5


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_synth_rejects_bad_durations(tmp_path: Path, bad: float) -> None:
    with pytest.raises(MediaError, match=r"^synth .*: duration must be a positive number"):
        compose.synth(tmp_path / "x.wav", seed="s", duration=bad)


def test_unsupported_suffix(tmp_path: Path) -> None:
    with pytest.raises(
        MediaError,
        match=r"^synth .*x\.ogg: unsupported audio suffix '\.ogg' "
        r"\(use \.wav, \.flac or \.mp3\)$",
    ):
        compose.synth(tmp_path / "x.ogg", seed="s", duration=1.0)


# ----------------------------------------------------------------------------- extend, mix


def test_extend_gives_the_whole_song(take30: Path, studio: Path) -> None:
    out = studio / "extended.mp3"
    compose.extend(take30, out, continue_at=20.0, seed="more", duration=30.0)
    info = probe(out)
    assert abs(info.duration - 50.0) <= MP3_FRAME
    assert info.audio_codec == "mp3"
    # The first 19.5 s are the source (re-encoded), the rest is new.
    src, ext = pcm(take30, rate=8000, channels=1), pcm(out, rate=8000, channels=1)
    head = 8000 * 195 // 10
    assert rms([a - b for a, b in zip(src[:head], ext[:head], strict=True)]) < 0.1 * rms(src[:head])
    late = slice(8000 * 21, 8000 * 29)
    assert rms([a - b for a, b in zip(src[late], ext[late], strict=True)]) > 0.5 * rms(src[late])


def test_extend_is_exact_in_wav_even_at_the_very_end(tmp_path: Path) -> None:
    src = write_wav(tmp_path / "s.wav", 3.0)
    compose.extend(src, tmp_path / "e.wav", continue_at=2.9999, seed="x", duration=1.0)
    assert probe(tmp_path / "e.wav").duration == round(3.9999 * 44100) / 44100


@pytest.mark.parametrize("at", [0.0, -2.0, 3.0, 31.0])
def test_extend_rejects_continue_at_outside_the_source(tmp_path: Path, at: float) -> None:
    src = write_wav(tmp_path / "s.wav", 3.0)
    expected = f"extend {src}: continue_at {at} must be inside the source (0 < continue_at < 3.000)"
    with pytest.raises(MediaError) as err:
        compose.extend(src, tmp_path / "e.wav", continue_at=at, seed="x", duration=1.0)
    assert str(err.value) == expected
    assert not (tmp_path / "e.wav").exists()


def test_mix_adds_a_vocal_layer(tmp_path: Path) -> None:
    base = tmp_path / "base.wav"
    compose.synth(base, seed="bed", duration=4.0, instrumental=True)
    compose.mix(base, tmp_path / "sung.flac", seed="voice", layer="vocals")
    assert probe(tmp_path / "sung.flac").duration == 4.0
    before, after = 1 - outside(base, 400, 1600), 1 - outside(tmp_path / "sung.flac", 400, 1600)
    assert before < 0.1
    assert after > max(0.12, 3 * before)


def test_mix_adds_an_instrumental_layer(tmp_path: Path) -> None:
    base = write_wav(tmp_path / "voice.wav", 2.0, freq=660.0, amplitude=0.2)
    compose.mix(base, tmp_path / "band.wav", seed="band", layer="instrumental")
    assert probe(tmp_path / "band.wav").duration == 2.0
    assert band_share(tmp_path / "band.wav", None, 250) > 0.1 > band_share(base, None, 250)


def test_mix_rejects_unknown_layers(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match=r"layer must be 'vocals' or 'instrumental', not 'x'"):
        compose.mix(write_wav(tmp_path / "b.wav", 0.5), tmp_path / "o.wav", seed="s", layer="x")


# ----------------------------------------------------------------------------- separate


@pytest.mark.parametrize(
    ("mode", "names"),
    [
        ("separate_vocal", ["vocals", "instrumental"]),
        ("split_stem", ["vocals", "bass", "keyboard", "drums", "fx"]),
    ],
)
def test_separate_stems_mix_back_to_the_source(
    take6: tuple[Path, Path], tmp_path: Path, mode: str, names: list[str]
) -> None:
    take, _ = take6
    stems = edit.separate(take, tmp_path / mode, mode=mode)
    assert list(stems) == names
    assert all(p.parent == tmp_path / mode and p.suffix == ".wav" for p in stems.values())
    src = pcm(take)
    parts = [pcm(p) for p in stems.values()]
    assert all(len(p) == len(src) for p in parts)
    diff = [s - sum(p) for s, *p in zip(src, *parts, strict=True)]
    assert rms(diff) < 0.01 * rms(src)
    assert all(rms(p) > 0 for p in parts)


def test_separate_finds_the_lead_in_the_vocal_stem(
    take6: tuple[Path, Path], tmp_path: Path
) -> None:
    take, stems = take6
    sung = edit.separate(take, tmp_path / "sung", mode="separate_vocal")["vocals"]
    # The band's filters shift phases, so compare levels, not waveforms.
    assert rms(pcm(sung)) == pytest.approx(rms(pcm(stems / "vocals.wav")), rel=0.2)
    bed = tmp_path / "bed.wav"
    compose.synth(bed, seed="take6", duration=2.0, style="synth pop", instrumental=True)
    unsung = edit.separate(bed, tmp_path / "unsung", mode="separate_vocal")["vocals"]
    assert rms(pcm(unsung)) < 0.15 * rms(pcm(bed))


def test_separate_rejects_unknown_modes(tmp_path: Path) -> None:
    src = write_wav(tmp_path / "s.wav", 0.5)
    with pytest.raises(
        MediaError,
        match=r"^separate .*s\.wav: mode must be 'separate_vocal' "
        r"or 'split_stem', not 'karaoke'$",
    ):
        edit.separate(src, tmp_path / "out", mode="karaoke")


# ----------------------------------------------------------------------------- transcode etc.


@pytest.mark.parametrize(
    ("fmt", "kbps", "codec", "bitrate"),
    [
        ("wav", None, "pcm_s16le", 1411),
        ("flac", None, "flac", None),
        ("mp3", None, "mp3", 192),
        ("mp3", 320, "mp3", 320),
        ("mp3", 128, "mp3", 128),
    ],
)
def test_transcode_formats(
    tmp_path: Path, fmt: str, kbps: int | None, codec: str, bitrate: int | None
) -> None:
    # Mono 48 kHz in: every output is 44.1 kHz stereo.
    src = write_wav(tmp_path / "in.wav", 1.5, rate=48000, channels=1)
    out = tmp_path / f"out.{fmt}"
    edit.transcode(src, out, fmt=fmt, bitrate_kbps=kbps)
    info = probe(out)
    assert (info.format, info.audio_codec, info.sample_rate, info.channels) == (
        fmt,
        codec,
        44100,
        2,
    )
    if bitrate is not None:
        assert info.bitrate_kbps == bitrate
    assert abs(info.duration - 1.5) <= (MP3_FRAME if fmt == "mp3" else 1 / 44100)


@pytest.mark.parametrize(
    ("name", "fmt", "kbps", "message"),
    [
        ("o.ogg", "ogg", None, "format must be wav, flac or mp3, not 'ogg'"),
        ("o.wav", "mp3", None, "suffix '.wav' does not match format 'mp3'"),
        (
            "o.mp3",
            "mp3",
            200,
            "mp3 bitrate 200 kb/s is not one of 32, 40, 48, 56, 64, 80, 96, "
            "112, 128, 160, 192, 224, 256, 320",
        ),
    ],
)
def test_transcode_rejects_bad_arguments(
    tmp_path: Path, name: str, fmt: str, kbps: int | None, message: str
) -> None:
    src = write_wav(tmp_path / "in.wav", 0.2)
    with pytest.raises(MediaError) as err:
        edit.transcode(src, tmp_path / name, fmt=fmt, bitrate_kbps=kbps)
    assert str(err.value) == f"transcode {tmp_path / name}: {message}"


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    bad = tmp_path / "in.wav"
    bad.write_bytes(b"RIFF nonsense")
    with pytest.raises(MediaError, match=r"^transcode .*out\.mp3: ffmpeg: .+"):
        edit.transcode(bad, tmp_path / "out.mp3", fmt="mp3")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def test_concat_joins_any_formats(tmp_path: Path) -> None:
    a = write_wav(tmp_path / "a.wav", 1.5, rate=48000, channels=1)
    edit.transcode(write_wav(tmp_path / "b.wav", 2.0), tmp_path / "b.mp3", fmt="mp3")
    edit.concat([a, tmp_path / "b.mp3"], tmp_path / "ab.wav")
    assert abs(probe(tmp_path / "ab.wav").duration - 3.5) <= 1 / 44100


def test_concat_needs_clips(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match=r"^concat .*: nothing to join$"):
        edit.concat([], tmp_path / "x.wav")


def test_trim(tmp_path: Path) -> None:
    src = write_wav(tmp_path / "s.wav", 3.0)
    edit.trim(src, tmp_path / "t.wav", start=0.5, end=1.75)
    assert probe(tmp_path / "t.wav").duration == 1.25
    edit.trim(src, tmp_path / "t2.flac", start=2.0, end=99.0)
    assert probe(tmp_path / "t2.flac").duration == 1.0
    with pytest.raises(MediaError, match=r"start 3\.5 must be inside the source"):
        edit.trim(src, tmp_path / "t3.wav", start=3.5)
    with pytest.raises(MediaError, match=r"end 0\.5 must come after start 1\.0"):
        edit.trim(src, tmp_path / "t3.wav", start=1.0, end=0.5)


def test_fade(tmp_path: Path) -> None:
    src = write_wav(tmp_path / "s.wav", 2.0, amplitude=0.5)
    edit.fade(src, tmp_path / "f.wav", fade_in=0.5, fade_out=0.5)
    assert probe(tmp_path / "f.wav").duration == 2.0
    before, after = pcm(src, channels=1), pcm(tmp_path / "f.wav", channels=1)
    edge = 441  # 10 ms
    assert rms(after[:edge]) < 0.05 * rms(before[:edge])
    assert rms(after[-edge:]) < 0.05 * rms(before[-edge:])
    middle = slice(44100 - edge, 44100 + edge)
    assert abs(rms(after[middle]) - rms(before[middle])) < 0.01 * rms(before[middle])
    with pytest.raises(MediaError, match=r"fade_out 3 must be between 0 and the length"):
        edit.fade(src, tmp_path / "g.wav", fade_out=3)


# ----------------------------------------------------------------------------- loudness


def test_loudness_of_a_known_sine(tmp_path: Path) -> None:
    # A 1 kHz sine at -20 dBFS in both channels reads -20 LUFS (K-weighting is flat there).
    src = write_wav(tmp_path / "k.wav", 3.0, freq=1000.0, amplitude=0.1)
    assert edit.loudness(src) == pytest.approx(-20.0, abs=0.3)


@pytest.mark.parametrize(("target", "gain_db"), [(-14.0, 0.0), (-20.0, 0.0), (-14.0, -12.0)])
def test_normalize_hits_the_target(
    take6: tuple[Path, Path], tmp_path: Path, target: float, gain_db: float
) -> None:
    take, _ = take6
    src = take
    if gain_db:
        # A quiet master: reaching the target needs the limiter and its correction.
        src = tmp_path / "quiet.wav"
        subprocess.run(
            [
                ffmpeg_exe(),
                "-hide_banner",
                "-loglevel",
                "error",
                "-i",
                str(take),
                "-af",
                f"volume={gain_db}dB",
                str(src),
            ],
            check=True,
        )
    out = tmp_path / "n.mp3"
    edit.normalize(src, out, lufs=target)
    assert abs(edit.loudness(out) - target) <= 1.0
    assert abs(probe(out).duration - 6.0) <= MP3_FRAME


def test_normalize_copies_silence(tmp_path: Path) -> None:
    src = write_wav(tmp_path / "z.wav", 1.0, amplitude=0.0)
    edit.normalize(src, tmp_path / "n.wav")
    assert edit.loudness(tmp_path / "n.wav") == -70.0
    assert pcm(tmp_path / "n.wav") == pcm(src)


# ----------------------------------------------------------------------------- pictures


@pytest.mark.parametrize(
    ("name", "fmt", "codec"), [("c.png", "png", "png"), ("c.jpg", "jpeg", "mjpeg")]
)
def test_cover_image(tmp_path: Path, name: str, fmt: str, codec: str) -> None:
    art.cover_image(tmp_path / name, seed="art", size=200)
    info = probe(tmp_path / name)
    assert (info.format, info.video_codec, info.width, info.height, info.duration) == (
        fmt,
        codec,
        200,
        200,
        0.0,
    )
    art.cover_image(tmp_path / f"other_{name}", seed="other art", size=200)
    assert (tmp_path / name).read_bytes() != (tmp_path / f"other_{name}").read_bytes()


def test_cover_image_rejects_other_suffixes(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match=r"unsupported image suffix '\.gif'"):
        art.cover_image(tmp_path / "c.gif", seed="s")


@pytest.mark.parametrize("with_image", [False, True])
def test_video_is_h264_and_aac_as_long_as_the_audio(tmp_path: Path, with_image: bool) -> None:
    audio = tmp_path / "a.mp3"
    compose.synth(audio, seed="clip", duration=3.0)
    image = None
    if with_image:
        image = tmp_path / "wide.jpg"
        subprocess.run(
            [
                ffmpeg_exe(),
                "-hide_banner",
                "-loglevel",
                "error",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=s=320x180:d=1",
                "-frames:v",
                "1",
                str(image),
            ],
            check=True,
        )
    art.video(audio, tmp_path / "v.mp4", seed="clip", image=image)
    info = probe(tmp_path / "v.mp4")
    assert (info.format, info.video_codec, info.audio_codec, info.width, info.height) == (
        "mp4",
        "h264",
        "aac",
        640,
        360,
    )
    assert abs(info.duration - probe(audio).duration) <= AAC_FRAME


# ----------------------------------------------------------------------------- determinism

_MAKE_ALL = """
import sys
from pathlib import Path
from runner.studio import art, compose, edit
d = Path(sys.argv[1])
compose.synth(d / "s.mp3", seed="det", duration=3.0, style="lofi")
compose.extend(d / "s.mp3", d / "e.wav", continue_at=2.0, seed="det2", duration=2.0)
edit.transcode(d / "s.mp3", d / "t.flac", fmt="flac")
art.cover_image(d / "c.jpg", seed="det", size=128)
art.video(d / "s.mp3", d / "v.mp4", seed="det")
"""


def test_same_arguments_same_bytes_across_processes(tmp_path: Path) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", _MAKE_ALL, str(there)], env=env)
    compose.synth(here / "s.mp3", seed="det", duration=3.0, style="lofi")
    compose.extend(here / "s.mp3", here / "e.wav", continue_at=2.0, seed="det2", duration=2.0)
    edit.transcode(here / "s.mp3", here / "t.flac", fmt="flac")
    art.cover_image(here / "c.jpg", seed="det", size=128)
    art.video(here / "s.mp3", here / "v.mp4", seed="det")
    assert child.wait(timeout=60) == 0
    names = ["c.jpg", "e.wav", "s.mp3", "t.flac", "v.mp4"]
    assert sorted(p.name for p in there.iterdir()) == names
    for name in names:
        assert (here / name).read_bytes() == (there / name).read_bytes(), name
