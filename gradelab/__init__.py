"""gradelab: stream student scores through Apache Kafka and average them live.

The package backs the course notebooks, the console apps and the Tkinter
dashboard. Each module contains one concept: :mod:`~gradelab.config`,
:mod:`~gradelab.record`, :mod:`~gradelab.producer`, :mod:`~gradelab.consumer`,
:mod:`~gradelab.averages`, :mod:`~gradelab.gradebook`,
:mod:`~gradelab.simulate`, :mod:`~gradelab.broker` and :mod:`~gradelab.errors`.
"""

from gradelab.averages import Averages, RunningStats, average_scores
from gradelab.checkpoint import CheckpointedAverages
from gradelab.config import Settings
from gradelab.consumer import (
    ScoreConsumer,
    compute_averages,
    make_consumer,
    read_scores,
    stream_averages,
)
from gradelab.dlq import DeadLetterPublisher, read_dead_letters
from gradelab.errors import (
    AuthenticationFailedError,
    BrokerUnavailableError,
    ConfigError,
    GradebookError,
    GradelabError,
    InvalidRecordError,
    LocalBrokerError,
)
from gradelab.gradebook import read_gradebook
from gradelab.producer import ScoreProducer, ensure_topic, make_producer, produce_scores
from gradelab.record import Score, decode_score, record_key
from gradelab.simulate import simulate_scores

__all__ = [
    "Averages",
    "AuthenticationFailedError",
    "BrokerUnavailableError",
    "CheckpointedAverages",
    "ConfigError",
    "DeadLetterPublisher",
    "GradebookError",
    "GradelabError",
    "InvalidRecordError",
    "LocalBrokerError",
    "RunningStats",
    "Score",
    "ScoreConsumer",
    "ScoreProducer",
    "Settings",
    "average_scores",
    "compute_averages",
    "decode_score",
    "ensure_topic",
    "make_consumer",
    "make_producer",
    "produce_scores",
    "read_dead_letters",
    "read_gradebook",
    "read_scores",
    "record_key",
    "simulate_scores",
    "stream_averages",
]

__version__ = "0.1.0"
