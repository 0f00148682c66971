"""Translate sentences through TF Serving's gRPC API."""

import argparse


def predict_request(sentences, model_name="translator", signature="serving_default"):
    """A `PredictRequest` for the translator's signatures."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    request.inputs["sentences"].CopyFrom(
        tf.make_tensor_proto(list(sentences), dtype=tf.string)
    )
    return request


def translate(sentences, target="localhost:8500", signature="serving_default"):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(
            predict_request(sentences, signature=signature), timeout=60.0
        )
    translations = tf.make_ndarray(response.outputs["translations"])
    return [t.decode("utf-8") for t in translations]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sentences", nargs="+")
    parser.add_argument("--target", default="localhost:8500")
    parser.add_argument("--signature", default="serving_default")
    args = parser.parse_args(argv)
    for translation in translate(args.sentences, args.target, args.signature):
        print(translation)


if __name__ == "__main__":
    main()
