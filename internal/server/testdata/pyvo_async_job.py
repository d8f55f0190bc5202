"""Drive jobs of a running hub with pyvo's AsyncTAPJob, as a UWS user would:
nothing set on the requests session but its Authorization header (a bearer
token, or HTTP Basic credentials with the token as the password).

Arguments: TOKEN URL_COMPLETED URL_ABORTED URL_ERROR. The hub's simulated
agents (TestPyvoAsyncTAPJob in jobs_uws_clients_test.go) complete, see
aborted and fail these jobs. Prints one JSON object of what pyvo saw."""
import json
import sys
import warnings

import requests
from pyvo.dal import DALQueryError, DALServiceError
from pyvo.dal.tap import AsyncTAPJob

warnings.simplefilter("ignore")  # pyvo's UnknownElementWarning for jobInfo

token, url_completed, url_aborted, url_error = sys.argv[1:5]
out = {}

# 1. Bearer: run, wait, read the results, delete.
bearer = requests.Session()
bearer.headers["Authorization"] = "Bearer " + token
job = AsyncTAPJob(url_completed, session=bearer)
out["created_phase"] = job.phase
out["uws_version"] = job.uws_version
job.run()
job.wait()
out["completed_phase"] = job.phase
out["result_ids"] = [r.id_ for r in job.results]
out["summary"] = bearer.get(job.result_uri).text
out["file"] = bearer.get(job.result_uris[1]).text
job.delete()
try:
    AsyncTAPJob(url_completed, session=bearer)
    out["after_delete"] = "still there"
except DALServiceError as e:
    out["after_delete"] = str(e)

# 2. HTTP Basic with the token as the password (TOPCAT, STILTS, curl -u):
# run, wait until it executes, abort.
basic = requests.Session()
basic.auth = ("any-user-name", token)
job = AsyncTAPJob(url_aborted, session=basic)
job.run()
# Not job.wait(phases={"EXECUTING"}): its first WAIT blocks while the job
# stays EXECUTING (UWS 1.1), so it returns only at the cap. Wait only while
# the job is QUEUED.
for _ in range(10):
    if job.phase != "QUEUED":
        break
    job._update(wait_for_statechange=True)
out["running_phase"] = job.phase
job.abort()
out["aborted_phase"] = job.phase

# 3. A failing job: wait ends at ERROR and tells why.
job = AsyncTAPJob(url_error, session=bearer)
job.run()
job.wait()
out["error_phase"] = job.phase
es = job.job.errorsummary
out["error_type"] = es.type_ if es is not None else None
out["error_message"] = job.job.message
try:
    job.raise_if_error()
    out["raised"] = False
except DALQueryError:
    out["raised"] = True
out["error_detail"] = bearer.get(url_error + "/error").text

print(json.dumps(out))
