"""The `demo` source, fully offline, on material the project makes itself:

- a Fisher-layout telephone sample (stages/sources/demo.py), read with the Fisher recipe;
- a podcast-style RSS feed of mono multi-speaker episodes (stages/sources/synth_conversations.py),
  served on loopback and read with the podcasts recipe, so those episodes go through download,
  VAD, diarization, ASR and alignment like any podcast.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence

from pydantic import Field

from catalog.schema import Speaker, Utterance
from stages.audio import DecodedAudio
from stages.config import StageConfig
from stages.loopback import serve_directory
from stages.fetch import FetchConfig
from stages.sources.base import Discovery, RecordingTask
from stages.sources.demo import generate_demo_fisher
from stages.sources.fisher import FisherConfig, FisherSource
from stages.sources.podcasts import FeedConfig, PodcastsConfig, PodcastsSource
from stages.sources.synth_conversations import standard_test_set, write_feed

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


class DemoFisher(FisherSource):
    name = "demo"


class DemoPodcasts(PodcastsSource):
    name = "demo-podcasts"


class DemoSource:
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

    def discover(self) -> Discovery:
        generate_demo_fisher(self.fisher_root, num_calls=self.config.num_calls, seed=self.config.seed)
        found = self.fisher.discover()
        if not self.config.podcasts:
            return found
        conversations = standard_test_set(os.path.join(self.podcast_root, "site"), seed=self.config.seed)
        # A stable port keeps the feed's URLs, and so the episodes' identity, the same next time.
        with serve_directory(os.path.join(self.podcast_root, "site"), DEMO_PORT) as base_url:
            feed_path = write_feed(os.path.join(self.podcast_root, "site"), conversations, base_url)
            feed_url = f"{base_url}/{os.path.basename(feed_path)}"
            self.podcasts = DemoPodcasts(PodcastsConfig(
                feeds=[FeedConfig(url=feed_url, lang=self.config.lang, license=self.config.license,
                                  title="convcorpus demo podcast", roles="host_first")],
                download_dir=os.path.join(self.podcast_root, "downloads"),
                fetch=FetchConfig(rate_limit_per_s=0),  # our own loopback server
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

    def read_audio(self, task: RecordingTask) -> DecodedAudio:
        return self.fisher.read_audio(task) if task.source == self.fisher.name else self._podcasts().read_audio(task)

    def read_transcript(self, task: RecordingTask, recording: Any) -> Any:
        return self.fisher.read_transcript(task, recording)

    def assign_roles(self, task: RecordingTask, speakers: Sequence[Speaker], utterances: Sequence[Utterance]) -> None:
        if task.source != self.fisher.name:
            self._podcasts().assign_roles(task, speakers, utterances)
