"""Special token ids shared by the tokenizers, data pipelines, model and decoders.

Every vocabulary built by `keras_transformer.text` reserves the same four ids,
so a model, its data and its exported translator always agree:

| id | piece   | meaning                                             |
|----|---------|-----------------------------------------------------|
| 0  | `<pad>` | padding; masked out of attention and of the loss    |
| 1  | `<unk>` | unknown piece                                       |
| 2  | `<s>`   | beginning of sequence; the first decoder input      |
| 3  | `</s>`  | end of sequence; appended to every target           |
"""

PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3

PAD_PIECE = "<pad>"
UNK_PIECE = "<unk>"
BOS_PIECE = "<s>"
EOS_PIECE = "</s>"
