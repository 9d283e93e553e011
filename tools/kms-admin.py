#!/usr/bin/env python3
"""What a KMS operator does from the KMS's own console, done with PyKMIP's client rather
than coffer's, so tests can act on the KMS independently of the code they test:

  kms-admin.py CONFIG create --store-id ID --version N [--policy P] [--copy C] [--pre-active]
      make a new master-key version for a store the way a KMS rotation policy would,
      with the labels coffer reads (Application Specific Information); prints its UID
  kms-admin.py CONFIG revoke UID [--compromise]
  kms-admin.py CONFIG state UID          prints ACTIVE, DEACTIVATED, COMPROMISED, ...
  kms-admin.py CONFIG get UID            prints the key material in hex (for leak checks)

CONFIG is a coffer kms.toml (tools/kms-dev.sh prints one). Run it with the development
server's Python: build/kms/venv/bin/python tools/kms-admin.py ...
"""

import argparse
import os
import sys
import tomllib

from kmip.core import enums
from kmip.core.factories import attributes as attribute_factory
from kmip.core import objects
from kmip.pie import client as pie_client


def connect(config_path):
    with open(config_path, "rb") as f:
        cfg = tomllib.load(f)
    base = os.path.dirname(os.path.abspath(config_path))

    def path(p):
        return p if os.path.isabs(p) else os.path.join(base, p)

    c = pie_client.ProxyKmipClient(
        hostname=cfg["host"],
        port=int(cfg.get("port", 5696)),
        cert=path(cfg["cert"]),
        key=path(cfg["key"]),
        ca=path(cfg["ca"]),
        config_file="/dev/null",
    )
    c.open()
    return c


def create(c, args):
    f = attribute_factory.AttributeFactory()
    A = enums.AttributeType
    attrs = [
        f.create_attribute(A.CRYPTOGRAPHIC_ALGORITHM, enums.CryptographicAlgorithm.AES),
        f.create_attribute(A.CRYPTOGRAPHIC_LENGTH, 256),
        f.create_attribute(
            A.CRYPTOGRAPHIC_USAGE_MASK,
            [
                enums.CryptographicUsageMask.ENCRYPT,
                enums.CryptographicUsageMask.DECRYPT,
                enums.CryptographicUsageMask.WRAP_KEY,
                enums.CryptographicUsageMask.UNWRAP_KEY,
            ],
        ),
        f.create_attribute(A.NAME, "coffer-%s-v%d-kms" % (args.store_id, args.version)),
        f.create_attribute(A.OBJECT_GROUP, "coffer"),
    ]
    labels = [("x-store-id", args.store_id), ("x-key-version", str(args.version))]
    if args.policy:
        labels.append(("x-policy", args.policy))
    if args.copy:
        labels.append(("x-copy", args.copy))
    for i, (ns, data) in enumerate(labels):
        attrs.append(
            f.create_attribute(
                A.APPLICATION_SPECIFIC_INFORMATION,
                {"application_namespace": ns, "application_data": data},
                index=i,
            )
        )
    result = c.proxy.create(
        enums.ObjectType.SYMMETRIC_KEY, objects.TemplateAttribute(attributes=attrs)
    )
    if result.result_status.value != enums.ResultStatus.SUCCESS:
        sys.exit("kms-admin: create failed: %s" % result.result_message.value)
    uid = result.uuid
    if not args.pre_active:
        c.activate(uid)
    print(uid)


def revoke(c, args):
    reason = (
        enums.RevocationReasonCode.KEY_COMPROMISE
        if args.compromise
        else enums.RevocationReasonCode.CESSATION_OF_OPERATION
    )
    c.revoke(reason, uid=args.uid, compromise_occurrence_date=1 if args.compromise else None)


def state(c, args):
    _, attrs = c.get_attributes(args.uid, ["State"])
    for a in attrs:
        if a.attribute_name.value == "State":
            print(a.attribute_value.value.name)
            return
    sys.exit("kms-admin: no State for %s" % args.uid)


def get(c, args):
    print(c.get(args.uid).value.hex())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("config")
    sub = p.add_subparsers(dest="cmd", required=True)
    cr = sub.add_parser("create")
    cr.add_argument("--store-id", required=True)
    cr.add_argument("--version", type=int, required=True)
    cr.add_argument("--policy")
    cr.add_argument("--copy")
    cr.add_argument("--pre-active", action="store_true")
    rv = sub.add_parser("revoke")
    rv.add_argument("uid")
    rv.add_argument("--compromise", action="store_true")
    st = sub.add_parser("state")
    st.add_argument("uid")
    gt = sub.add_parser("get")
    gt.add_argument("uid")
    args = p.parse_args()
    c = connect(args.config)
    try:
        {"create": create, "revoke": revoke, "state": state, "get": get}[args.cmd](c, args)
    finally:
        c.close()


if __name__ == "__main__":
    main()
