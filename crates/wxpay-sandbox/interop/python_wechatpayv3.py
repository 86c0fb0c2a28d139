#!/usr/bin/env python3
"""Interop check: the independent Python SDK `wechatpayv3` (PyPI, minibear2021/wechatpayv3)
against a running sandbox, unmodified apart from its base URL.

    python3 -m venv /tmp/wxvenv && /tmp/wxvenv/bin/pip install wechatpayv3==2.0.4
    cargo run -p wxpay-sandbox --example serve -- 127.0.0.1:8090 &
    /tmp/wxvenv/bin/python crates/wxpay-sandbox/interop/python_wechatpayv3.py http://127.0.0.1:8090 public_key
    # platform-certificate mode needs a sandbox.toml with verify_mode = "platform_certificate":
    /tmp/wxvenv/bin/python crates/wxpay-sandbox/interop/python_wechatpayv3.py http://127.0.0.1:8091 platform_certificate

Exit code 0 and "interop OK" on success.
"""
import http.server
import json
import os
import sys
import threading
import time
import urllib.request

import wechatpayv3.core as core
from wechatpayv3 import WeChatPay, WeChatPayType

BASE = sys.argv[1].rstrip("/")
MODE = sys.argv[2] if len(sys.argv) > 2 else "public_key"
MCHID = "1900007291"
HERE = os.path.dirname(os.path.abspath(__file__))
KEY = open(os.path.join(HERE, "../../../demo/keys/official_test_key.pem")).read()

# The one change: the SDK's gateway constant (also used while loading certificates in __init__).
_orig = core.Core._init_certificates


def _init_with_base(self):
    self._gate_way = BASE
    _orig(self)


core.Core._init_certificates = _init_with_base


def control(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(BASE + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"null")


received = []


class Notify(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        result = wxpay.callback(headers=dict(self.headers.items()), body=body)
        received.append(result)
        if result:
            self.send_response(204)
            self.end_headers()
        else:
            self.send_response(401)
            self.end_headers()
            self.wfile.write(b'{"code":"FAIL","message":"bad signature"}')

    def log_message(self, *args):
        pass


srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Notify)
threading.Thread(target=srv.serve_forever, daemon=True).start()
notify_url = "http://127.0.0.1:%d/notify" % srv.server_address[1]

kwargs = dict(wechatpay_type=WeChatPayType.APP, mchid=MCHID, private_key=KEY,
              cert_serial_no="408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB",
              appid="wxd678efh567hg6787", apiv3_key="a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb",
              notify_url=notify_url, timeout=(5, 10))
if MODE == "public_key":
    pub = control("GET", "/sandbox/api/merchants/%s/wechatpay-public-key" % MCHID)
    kwargs.update(public_key=pub["pem"], public_key_id=pub["id"])
wxpay = WeChatPay(**kwargs)
wxpay._core._gate_way = BASE

no = "py%d" % int(time.time() * 1000)
code, msg = wxpay.pay(description="跨语言测试", out_trade_no=no, amount={"total": 100},
                      attach="自定义数据", pay_type=WeChatPayType.APP)
assert code == 200, (code, msg)
prepay_id = json.loads(msg)["prepay_id"]
code, msg = wxpay.query(out_trade_no=no)
assert code == 200 and json.loads(msg)["trade_state"] == "NOTPAY", (code, msg)

control("POST", "/sandbox/api/pay", {"prepay_id": prepay_id})
for _ in range(100):
    if received:
        break
    time.sleep(0.05)
assert received and received[0], received
res = received[0]
assert res["event_type"] == "TRANSACTION.SUCCESS", res
assert res["resource"]["trade_state"] == "SUCCESS", res
assert res["resource"]["amount"]["total"] == 100, res
code, msg = wxpay.query(out_trade_no=no)
tx = json.loads(msg)
assert code == 200 and tx["trade_state"] == "SUCCESS", (code, msg)
code, msg = wxpay.query(transaction_id=tx["transaction_id"])
assert code == 200, (code, msg)

code, msg = wxpay.refund(out_refund_no="R" + no, amount={"refund": 10, "total": 100, "currency": "CNY"},
                         out_trade_no=no, notify_url=notify_url)
assert code == 200 and json.loads(msg)["status"] == "PROCESSING", (code, msg)
code, msg = wxpay.query_refund(out_refund_no="R" + no)
assert code == 200, (code, msg)

no2 = no + "c"
code, msg = wxpay.pay(description="close me", out_trade_no=no2, amount={"total": 1}, pay_type=WeChatPayType.APP)
assert code == 200, (code, msg)
code, msg = wxpay.close(out_trade_no=no2)
assert code == 204, (code, msg)

code, msg = wxpay.pay(description="bad", out_trade_no=no + "x", amount={"total": 0}, pay_type=WeChatPayType.APP)
assert code == 400 and json.loads(msg)["code"] == "PARAM_ERROR", (code, msg)

if MODE == "platform_certificate":
    control("POST", "/sandbox/api/merchants/%s/rotate-certificates" % MCHID)
    # Signed with the new certificate: the SDK fetches /v3/certificates again and verifies.
    code, msg = wxpay.query(out_trade_no=no)
    assert code == 200, (code, msg)

for _ in range(100):
    if len(received) >= 2:
        break
    time.sleep(0.05)
refunds = [r for r in received[1:] if r]
assert refunds and refunds[0]["event_type"].startswith("REFUND."), received

print("interop OK (%s): order %s, transaction %s" % (MODE, no, tx["transaction_id"]))
