-- wrk_authorize.lua: POST /v1/authorize with a request id of its own per
-- request, for wrk (docs/benchmarks.md, "Authorize under wrk").
--   TOKEN=<gateway token> RUN=<tag> HOT=1 wrk -t2 -c32 -d8s --latency \
--     -s tools/bench/wrk_authorize.lua http://127.0.0.1:PORT/v1/authorize
-- HOT=1: every request for account ACCOUNT_LO (1); otherwise accounts
-- ACCOUNT_LO..ACCOUNT_LO+ACCOUNTS-1 (1000 of them) in turn.  The accounts
-- must exist and be funded (make bench's wrk scenario, or BENCH_KEEP=1).
local n, tid = 0, 0
local hot = os.getenv("HOT") == "1"
local accounts = tonumber(os.getenv("ACCOUNTS") or "1000")
local lo = tonumber(os.getenv("ACCOUNT_LO") or "1")
local run = os.getenv("RUN") or tostring(os.time())
local headers = {["Authorization"] = "Bearer " .. (os.getenv("TOKEN") or ""), ["Content-Type"] = "application/json"}

function setup(thread)
	tid = tid + 1
	thread:set("tid", tid)
end

function request()
	n = n + 1
	local acct = hot and lo or (lo + (n * 7 + tid) % accounts)
	local body = string.format('{"request_id":"wrk-%s-%d-%d","account_id":%d,"model":"deepseek-chat",' ..
		'"input_tokens":1200,"max_output_tokens":1000}', run, tid, n, acct)
	return wrk.format("POST", nil, headers, body)
end
