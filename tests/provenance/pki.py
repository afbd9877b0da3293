#!/usr/bin/env python3
"""Signing material for the provenance tests, made with `cryptography` as a security
team's tools would: an EC signing key, and a CA with signing certificates under it.

    pki.py key DIR NAME                   DIR/NAME.key (EC P-256) and DIR/NAME.pub
    pki.py ca DIR NAME                    DIR/NAME.pem (a CA certificate) and DIR/NAME.key
    pki.py cert DIR CA NAME IDENTITY [--expired]
                                          DIR/NAME.pem signed by CA for IDENTITY (an email
                                          address in the SAN, and the subject's CN), with
                                          its key DIR/NAME.key; `--expired` ended yesterday
"""

import datetime
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def write(path, data):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def new_key(d, name):
    key = ec.generate_private_key(ec.SECP256R1())
    write(f"{d}/{name}.key", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    write(f"{d}/{name}.pub", key.public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo))
    return key


def load(d, name):
    with open(f"{d}/{name}.key", "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    with open(f"{d}/{name}.pem", "rb") as f:
        return key, x509.load_pem_x509_certificate(f.read())


def ca(d, name):
    key = new_key(d, name)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} model signing CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    write(f"{d}/{name}.pem", cert.public_bytes(serialization.Encoding.PEM))


def cert(d, ca_name, name, identity, expired):
    ca_key, ca_cert = load(d, ca_name)
    key = new_key(d, name)
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = (now - datetime.timedelta(days=3), now - datetime.timedelta(days=1)) if expired else \
        (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=7))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(identity)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    write(f"{d}/{name}.pem", cert.public_bytes(serialization.Encoding.PEM))


if __name__ == "__main__":
    args = sys.argv[1:]
    expired = "--expired" in args
    args = [a for a in args if a != "--expired"]
    if args[0] == "key":
        new_key(args[1], args[2])
    elif args[0] == "ca":
        ca(args[1], args[2])
    elif args[0] == "cert":
        cert(args[1], args[2], args[3], args[4], expired)
    else:
        sys.exit("use key, ca or cert")
