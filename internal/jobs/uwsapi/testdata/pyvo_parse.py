"""Parse UWS documents with pyvo and print what it read, one JSON object
per argument. Arguments are job=PATH (parse_job) or list=PATH
(parse_job_list). Used by TestPyvo in uws_test.go."""
import json
import sys
import warnings

from pyvo.io.uws import parse_job, parse_job_list


def instant(t):
    return None if t is None else t.isot


def job(j):
    es = j.errorsummary
    return {
        "version": j.version,
        "jobid": j.jobid,
        "runid": j.runid,
        "ownerid": j.ownerid,
        "phase": j.phase,
        "quote": instant(j.quote),
        "creationtime": instant(j.creationtime),
        "starttime": instant(j.starttime),
        "endtime": instant(j.endtime),
        "executionduration": None if j.executionduration is None else j.executionduration.sec,
        "destruction": instant(j.destruction),
        "parameters": [[p.id_, p.content] for p in j.parameters],
        "results": [[r.id_, r.href, r.size, r.mimetype] for r in j.results],
        "errortype": None if es is None else es.type_,
        "hasdetail": None if es is None else es.has_detail,
        "message": j.message,
    }


def joblist(jl):
    return {
        "jobs": [
            {
                "jobid": j.jobid,
                "phase": j.phase,
                "runid": j.runid,
                "ownerid": j.ownerid,
                "creationtime": instant(j.creationtime),
            }
            for j in jl
        ]
    }


for arg in sys.argv[1:]:
    kind, path = arg.split("=", 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = job(parse_job(path)) if kind == "job" else joblist(parse_job_list(path))
    out["warnings"] = [str(w.message) for w in caught]
    print(json.dumps(out))
