#!/usr/bin/env python3
"""Reads a log directory of scalelab event files with TensorBoard's own readers; prints JSON.

Usage: read_events.py LOGDIR

Exit status 3 (and a message on stderr) when the `tensorboard` package is not importable, so
that the Rust test can tell "reader missing" from "reader rejected the files".

For every run directory under LOGDIR (read with EventAccumulator, size_guidance 0 = keep all):
scalars, histograms (raw and as the histogram dashboard sees them after data_compat), texts
and the hparams plugin data (parsed with the plugin's own metadata parsers). Then the HParams
tab's view of the whole LOGDIR: the experiment and the session groups that
`list_session_groups` (the handler behind the tab) returns.
"""

import json
import os
import sys

try:
    from tensorboard import context, data_compat
    from tensorboard.backend.event_processing import data_provider
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.backend.event_processing import plugin_event_multiplexer
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import (
        api_pb2,
        backend_context,
        get_experiment,
        list_session_groups,
        metadata,
        plugin_data_pb2,
    )
    from tensorboard.util import tensor_util
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"tensorboard is not importable: {e}", file=sys.stderr)
    sys.exit(3)


def proto_value(value):
    kind = value.WhichOneof("kind")
    return {
        "number_value": lambda: value.number_value,
        "string_value": lambda: value.string_value,
        "bool_value": lambda: value.bool_value,
    }.get(kind, lambda: None)()


def read_run(path):
    acc = ea.EventAccumulator(path, size_guidance={k: 0 for k in ea.DEFAULT_SIZE_GUIDANCE})
    acc.Reload()
    tags = acc.Tags()
    run = {"file_version": acc.file_version}

    run["scalars"] = {
        tag: [[e.step, e.value, e.wall_time] for e in acc.Scalars(tag)] for tag in tags["scalars"]
    }

    run["histograms"] = {}
    run["histogram_dashboard"] = {}
    for tag in tags["histograms"]:
        events = acc.Histograms(tag)
        run["histograms"][tag] = [
            {
                "step": e.step,
                "min": e.histogram_value.min,
                "max": e.histogram_value.max,
                "num": e.histogram_value.num,
                "sum": e.histogram_value.sum,
                "sum_squares": e.histogram_value.sum_squares,
                "bucket_limit": list(e.histogram_value.bucket_limit),
                "bucket": list(e.histogram_value.bucket),
            }
            for e in events
        ]
        # The histogram dashboard reads new-style [left, right, count] tensors; data_compat is
        # the conversion it applies to old-style `histo` values.
        last = events[-1].histogram_value
        value = summary_pb2.Summary.Value(
            tag=tag,
            histo=summary_pb2.HistogramProto(
                min=last.min,
                max=last.max,
                num=last.num,
                sum=last.sum,
                sum_squares=last.sum_squares,
                bucket_limit=last.bucket_limit,
                bucket=last.bucket,
            ),
        )
        migrated = data_compat.migrate_value(value)
        run["histogram_dashboard"][tag] = tensor_util.make_ndarray(migrated.tensor).tolist()

    run["texts"] = {}
    for tag in acc.PluginTagToContent("text"):
        run["texts"][tag] = [
            [e.step, tensor_util.make_ndarray(e.tensor_proto).reshape(-1)[0].decode("utf-8")]
            for e in acc.Tensors(tag)
        ]

    hp = {}
    for tag, content in acc.PluginTagToContent(metadata.PLUGIN_NAME).items():
        if tag == metadata.EXPERIMENT_TAG:
            exp = metadata.parse_experiment_plugin_data(content)
            hp["experiment"] = {
                "hparams": {
                    i.name: api_pb2.DataType.Name(i.type) for i in exp.hparam_infos
                },
                "metrics": [[m.name.group, m.name.tag] for m in exp.metric_infos],
                "time_created_secs": exp.time_created_secs,
            }
        elif tag == metadata.SESSION_START_INFO_TAG:
            start = metadata.parse_session_start_info_plugin_data(content)
            hp["session_start"] = {
                "hparams": {k: proto_value(v) for k, v in start.hparams.items()},
                "start_time_secs": start.start_time_secs,
            }
        elif tag == metadata.SESSION_END_INFO_TAG:
            end = metadata.parse_session_end_info_plugin_data(content)
            hp["session_end"] = {
                "status": api_pb2.Status.Name(end.status),
                "end_time_secs": end.end_time_secs,
            }
    run["hparams"] = hp
    return run


def hparams_tab(logdir):
    """What the HParams tab asks the plugin for: the experiment, then the session groups."""
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(logdir)
    mux.Reload()
    tb_context = base_plugin.TBContext(
        logdir=logdir,
        multiplexer=mux,
        data_provider=data_provider.MultiplexerDataProvider(mux, logdir),
    )
    ctx = backend_context.Context(tb_context)
    request_context = context.RequestContext()
    experiment = get_experiment.Handler(
        request_context, ctx, "", api_pb2.GetExperimentRequest()
    ).run()
    col_params = [api_pb2.ColParams(hparam=i.name) for i in experiment.hparam_infos] + [
        api_pb2.ColParams(metric=m.name) for m in experiment.metric_infos
    ]
    request = api_pb2.ListSessionGroupsRequest(
        col_params=col_params,
        # The tab asks for every status; an empty list would match no session.
        allowed_statuses=[
            api_pb2.STATUS_UNKNOWN,
            api_pb2.STATUS_SUCCESS,
            api_pb2.STATUS_FAILURE,
            api_pb2.STATUS_RUNNING,
        ],
        aggregation_type=api_pb2.AGGREGATION_AVG,
        start_index=0,
        slice_size=1000,
    )
    response = list_session_groups.Handler(request_context, ctx, "", request).run()
    groups = []
    for g in response.session_groups:
        groups.append(
            {
                "name": g.name,
                "hparams": {k: proto_value(v) for k, v in g.hparams.items()},
                "metrics": {m.name.tag: [m.training_step, m.value] for m in g.metric_values},
                "sessions": [[s.name, api_pb2.Status.Name(s.status)] for s in g.sessions],
            }
        )
    return {
        "hparams": sorted(i.name for i in experiment.hparam_infos),
        "metrics": sorted(m.name.tag for m in experiment.metric_infos),
        "session_groups": sorted(groups, key=lambda g: g["sessions"][0][0]),
    }


def main():
    logdir = sys.argv[1]
    runs = {}
    for dirpath, _, files in os.walk(logdir):
        if any("tfevents" in f for f in files):
            runs[os.path.relpath(dirpath, logdir)] = read_run(dirpath)
    print(json.dumps({"runs": runs, "hparams_tab": hparams_tab(logdir)}, sort_keys=True))


if __name__ == "__main__":
    main()
