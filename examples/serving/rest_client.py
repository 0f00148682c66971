"""Translate sentences through TF Serving's REST API (standard library only)."""

import argparse
import json
import urllib.request


def predict_request(sentences, signature="serving_default"):
    """The JSON body of a `:predict` call in TF Serving's row format."""
    return {"signature_name": signature, "instances": list(sentences)}


def translate(sentences, url, signature="serving_default", timeout=60):
    body = json.dumps(predict_request(sentences, signature)).encode("utf-8")
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        predictions = json.loads(response.read())["predictions"]
    return [p["translations"] for p in predictions]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sentences", nargs="+")
    parser.add_argument(
        "--url", default="http://localhost:8501/v1/models/translator:predict"
    )
    parser.add_argument("--signature", default="serving_default")
    args = parser.parse_args(argv)
    for translation in translate(args.sentences, args.url, args.signature):
        print(translation)


if __name__ == "__main__":
    main()
