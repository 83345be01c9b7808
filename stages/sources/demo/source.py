"""The `demo` source, fully offline, on material the project makes itself:

- a Fisher-layout telephone sample (stages/sources/demo/fisher_calls.py), read with the Fisher recipe;
- a podcast-style RSS feed of mono multi-speaker episodes (stages/sources/demo/conversations.py),
  served on loopback and read with the podcasts recipe, so those episodes go through download,
  VAD, diarization, ASR and alignment like any podcast;
- synthetic USER/AI dialogues in Hindi, Telugu and English (source `demo-synthetic`, the
  synthetic recipe): Gemma 3 270M on a llama.cpp server the demo starts on loopback (and stops
  once the scripts are written) writes them turn by turn, espeak-ng speaks them, Whisper checks
  the English turns' round trip. Generated dialogues are kept in the work directory, so a second run
  starts no server.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence

from pydantic import Field, field_validator

from catalog.schema import Speaker, Utterance
from stages.audio.decode import DecodedAudio
from stages.config import AsrConfig, StageConfig
from stages.synth.scripts import ScriptConfig
from stages.synth.llm import LlmConfig
from stages.synth.llm_server import LlamaServerConfig
from stages.sources.demo.loopback import serve_directory
from stages.sources.fetch import FetchConfig
from stages.sources.base import Discovery, RecordingTask, SourceBase
from stages.sources.demo.fisher_calls import generate_demo_fisher
from stages.sources.fisher import FisherConfig, FisherSource
from stages.sources.podcasts import FeedConfig, PodcastsConfig, PodcastsSource
from stages.sources.demo.conversations import standard_test_set, write_feed
from stages.sources.synthetic import LANGUAGES as SYNTHETIC_LANGUAGES
from stages.sources.synthetic import AiPersona, SyntheticConfig, SyntheticSource
from stages.synth.tts.base import TtsConfig

DEMO_PORT = 47391
LICENSE = "CC0-1.0 (synthesized by convcorpus with espeak-ng)"


def default_workdir() -> str:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "convcorpus", "demo")


class DemoConfig(StageConfig):
    num_calls: int = Field(6, ge=1, le=200)
    podcasts: bool = Field(True, description="also build the synthesized podcast feed")
    seed: int = 0
    workdir: Optional[str] = Field(None, description="where the sample is synthesized (default: ~/.cache/convcorpus/demo)")
    lang: str = "en"
    license: str = LICENSE
    synthetic: bool = Field(True, description="also write and speak LLM dialogues (starts llama.cpp on loopback)")
    synthetic_languages: list[str] = Field(default_factory=lambda: ["hi", "te", "en"], min_length=1)
    synthetic_dialogues: int = Field(2, ge=1, le=50, description="per language")

    @field_validator("synthetic_languages")
    @classmethod
    def _languages(cls, v: list[str]) -> list[str]:
        bad = [x for x in v if x not in SYNTHETIC_LANGUAGES]
        if bad:
            raise ValueError(f"unsupported language(s) {bad}; supported: {list(SYNTHETIC_LANGUAGES)}")
        return list(dict.fromkeys(v))


class DemoFisher(FisherSource):
    name = "demo"


class DemoPodcasts(PodcastsSource):
    name = "demo-podcasts"


class DemoSynthetic(SyntheticSource):
    name = "demo-synthetic"


SYNTHETIC_LICENSE = "CC0-1.0 (written by Gemma 3 270M, spoken by espeak-ng)"


def demo_synthetic_config(config: DemoConfig, output_dir: str) -> SyntheticConfig:
    """The demo's dialogues: short (4-6 turns), one at a time on the packaged Gemma 3 270M.

    That model is small: asked for a whole dialogue it often stops early, slides into English or
    loops, so the demo asks for one turn per request (`turn_by_turn`) and samples a turn again
    when it already breaks a rule; the finished scripts meet the full validator.
    """
    return SyntheticConfig(
        languages=config.synthetic_languages,
        topics=["planning a weekend trip", "cooking dinner with what is in the fridge",
                "a problem with a train ticket booking", "choosing a phone for a parent"],
        ai_personas=[AiPersona(), AiPersona(name="Ravi", character="a cheerful travel guide",
                                            personality="enthusiastic, practical, a little funny")],
        user_profiles=["a college student in Hyderabad", "a retired teacher who is new to smartphones"],
        styles=["friendly", "curious", "slightly worried"],
        turns=(4, 6),
        dialogues=config.synthetic_dialogues,
        seed=config.seed,
        # 0.8: lower temperatures made Gemma 3 270M repeat itself more (see benchmarks/README.md).
        llm=LlmConfig(model="gemma-3-270m", mode="completion", temperature=0.8, max_tokens=200,
                      timeout_s=180, retries=1, max_concurrency=1),
        script=ScriptConfig(turn_by_turn=True, turn_attempts=6, max_attempts=4),
        tts=TtsConfig(backend="espeak"),
        asr=AsrConfig(),
        # Whisper base cannot read espeak-ng's Hindi or Telugu (their CER limits are off): only the
        # English turns are transcribed back, which keeps the demo's Whisper time to a third.
        roundtrip_unchecked=False,
        output_dir=output_dir,
        license=SYNTHETIC_LICENSE,
        serve=LlamaServerConfig(),
    )


class DemoSource(SourceBase):
    name = "demo"

    def __init__(self, config: DemoConfig):
        self.config = config
        root = os.path.join(config.workdir or default_workdir(), f"seed{config.seed}")
        self.fisher_root = os.path.join(root, f"telephone-n{config.num_calls}")
        self.podcast_root = os.path.join(root, "podcasts")
        self.fisher = DemoFisher(FisherConfig(
            audio=[self.fisher_root], transcripts=[self.fisher_root], lang=config.lang, license=config.license,
        ))
        self.podcasts: Optional[DemoPodcasts] = None
        self.synthetic = DemoSynthetic(demo_synthetic_config(config, os.path.join(root, "synthetic")))

    def discover(self) -> Discovery:
        generate_demo_fisher(self.fisher_root, num_calls=self.config.num_calls, seed=self.config.seed)
        found = self.fisher.discover()
        if self.config.podcasts:
            found = self._discover_podcasts(found)
        if self.config.synthetic:
            dialogues = self.synthetic.discover()
            found = Discovery(found.tasks + dialogues.tasks, found.rejects + dialogues.rejects)
        return found

    def _discover_podcasts(self, found: Discovery) -> Discovery:
        conversations = standard_test_set(os.path.join(self.podcast_root, "site"), seed=self.config.seed)
        # A stable port keeps the feed's URLs, and so the episodes' identity, the same next time.
        with serve_directory(os.path.join(self.podcast_root, "site"), DEMO_PORT) as base_url:
            feed_path = write_feed(os.path.join(self.podcast_root, "site"), conversations, base_url)
            feed_url = f"{base_url}/{os.path.basename(feed_path)}"
            self.podcasts = DemoPodcasts(PodcastsConfig(
                feeds=[FeedConfig(url=feed_url, lang=self.config.lang, license=self.config.license,
                                  title="convcorpus demo podcast", roles="host_first")],
                download_dir=os.path.join(self.podcast_root, "downloads"),
                # Our own loopback server: private addresses are allowed explicitly, for this feed only.
                fetch=FetchConfig(rate_limit_per_s=0, allow_private_hosts=True),
            ))
            episodes = self.podcasts.discover()
        return Discovery(found.tasks + episodes.tasks, found.rejects + episodes.rejects)

    def _podcasts(self) -> DemoPodcasts:
        if self.podcasts is None:  # a worker process: the downloads are already on disk
            self.podcasts = DemoPodcasts(PodcastsConfig(
                feeds=[FeedConfig(url="http://127.0.0.1/feed.xml")],
                download_dir=os.path.join(self.podcast_root, "downloads"),
            ))
        return self.podcasts

    def prepare_fingerprint(self) -> str:
        return self.synthetic.prepare_fingerprint()

    def prepare(self, task: RecordingTask) -> bool:
        return self.synthetic.prepare(task) if task.source == self.synthetic.name else False

    def read_audio(self, task: RecordingTask) -> DecodedAudio:
        if task.source == self.fisher.name:
            return self.fisher.read_audio(task)
        if task.source == self.synthetic.name:
            return self.synthetic.read_audio(task)
        return self._podcasts().read_audio(task)

    def read_transcript(self, task: RecordingTask, recording: Any) -> Any:
        if task.source == self.synthetic.name:
            return self.synthetic.read_transcript(task, recording)
        return self.fisher.read_transcript(task, recording)

    def assign_roles(self, task: RecordingTask, speakers: Sequence[Speaker], utterances: Sequence[Utterance]) -> None:
        if task.source != self.fisher.name:
            self._podcasts().assign_roles(task, speakers, utterances)
