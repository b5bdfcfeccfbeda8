"""Build tiny random-weight Hugging Face models offline, for tests and examples.

No hub is reachable, so every model here is a config with random weights plus a tokenizer
written from a small vocabulary, saved with ``save_pretrained`` into a local folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import transformers

WORDS = (
    "the a an is was are i you he she it we they my your his her its our their me him us them "
    "like love hate good bad great terrible happy sad food dinner lunch rice udon noodles want "
    "have problem with snowflake that needs to be resolved asap would today for and or but in "
    "on at of live name tokyo japan paris france london city country capital seat duchy grand "
    "yu what did do does where who which how why when channel subscribers most videos created "
    "number count sum average total people person company data cloud model registry query table "
    "urgent not english japanese french this example about sentence text hello world how are "
    "fine thanks weather sunny rainy movie film book story music song play game win lose ok "
    "yes no maybe please thank very much more less new old big small fast slow red blue green "
    "one two three four five six seven eight nine ten zero 1 2 3 4 5 6 7 8 9 0 . , ! ? ' \" - : ;"
).split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CORPUS = [
    "I like you. I love you, too.",
    "My name is Izumi and I live in Tokyo, Japan.",
    "The capital of France is Paris and Paris is a big city.",
    "I have a problem with Snowflake that needs to be resolved asap!!",
    "I would like to have udon for today's dinner.",
    "Hello world, how are you? I am fine, thanks.",
    "What is the weather like today? It is sunny, not rainy.",
    "Which channel has the most subscribers and videos?",
] * 4


def _seed(seed: int) -> None:
    torch.manual_seed(seed)


def wordpiece_tokenizer(folder: Path, cls: type = transformers.BertTokenizerFast):
    """A BERT WordPiece tokenizer from a hand-written vocab file (loaded from its folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL + sorted(set(WORDS)) + ["##s", "##ed", "##ing", "##zumi", "##ly", "##er"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return cls.from_pretrained(str(folder))


def _bert_config(**extra) -> transformers.BertConfig:
    return transformers.BertConfig(
        vocab_size=len(SPECIAL) + len(set(WORDS)) + 6,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        **extra,
    )


def _save(model, tokenizer, folder: Path) -> Path:
    model.eval()
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def _labelled_bert(folder: Path, model_class: type, labels, seed: int) -> Path:
    _seed(seed)
    tok = wordpiece_tokenizer(folder)
    config = _bert_config(
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    return _save(model_class(config), tok, folder)


def _plain_bert(folder: Path, model_class: type, seed: int) -> Path:
    _seed(seed)
    tok = wordpiece_tokenizer(folder)
    return _save(model_class(_bert_config()), tok, folder)


def bert_text_classification(folder: Path, labels=("NEGATIVE", "POSITIVE"), seed: int = 0) -> Path:
    return _labelled_bert(folder, transformers.BertForSequenceClassification, labels, seed)


def bert_zero_shot(folder: Path, seed: int = 1) -> Path:
    return bert_text_classification(folder, labels=("contradiction", "neutral", "entailment"), seed=seed)


def bert_token_classification(folder: Path, seed: int = 2) -> Path:
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    return _labelled_bert(folder, transformers.BertForTokenClassification, labels, seed)


def bert_fill_mask(folder: Path, seed: int = 3) -> Path:
    return _plain_bert(folder, transformers.BertForMaskedLM, seed)


def bert_feature_extraction(folder: Path, seed: int = 4) -> Path:
    return _plain_bert(folder, transformers.BertModel, seed)


def bytelevel_bpe_tokenizer(
    folder: Path, cls: type = transformers.GPT2TokenizerFast, special: tuple[str, ...] | list[str] = ("<|endoftext|>",)
):
    """A byte-level BPE tokenizer trained on a small corpus, saved and reloaded from its folder."""
    import tokenizers

    folder.mkdir(parents=True, exist_ok=True)
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=400, min_frequency=1, special_tokens=list(special))
    bpe.save_model(str(folder))
    return cls.from_pretrained(str(folder))


def gpt2_text_generation(folder: Path, seed: int = 5) -> Path:
    _seed(seed)
    tok = bytelevel_bpe_tokenizer(folder)
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    config = transformers.GPT2Config(
        vocab_size=len(tok),
        n_positions=256,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    return _save(transformers.GPT2LMHeadModel(config), tok, folder)


def tapas_table_qa(folder: Path, seed: int = 6) -> Path:
    _seed(seed)
    tok = wordpiece_tokenizer(folder, cls=transformers.TapasTokenizer)
    config = transformers.TapasConfig(
        vocab_size=len(SPECIAL) + len(set(WORDS)) + 6,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_aggregation_labels=4,
        aggregation_labels={0: "NONE", 1: "SUM", 2: "AVERAGE", 3: "COUNT"},
        use_answer_as_supervision=True,
    )
    return _save(transformers.TapasForQuestionAnswering(config), tok, folder)


def bert_question_answering(folder: Path, seed: int = 7) -> Path:
    return _plain_bert(folder, transformers.BertForQuestionAnswering, seed)


def bart_seq2seq(folder: Path, seed: int = 8, positions: int = 256) -> Path:
    """A BART encoder-decoder (summarization, text2text, seq2seq conversations)."""
    _seed(seed)
    tok = bytelevel_bpe_tokenizer(folder, cls=transformers.BartTokenizerFast, special=["<s>", "<pad>", "</s>", "<unk>"])
    config = transformers.BartConfig(
        vocab_size=len(tok),
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=positions,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.eos_token_id,
        forced_eos_token_id=tok.eos_token_id,
    )
    return _save(transformers.BartForConditionalGeneration(config), tok, folder)


def roberta_text_classification(folder: Path, seed: int = 16) -> Path:
    """A RoBERTa classifier: byte-level BPE with <s>/</s> pairs, and positions offset past the padding index."""
    _seed(seed)
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = bytelevel_bpe_tokenizer(folder, cls=transformers.RobertaTokenizerFast, special=special)
    config = transformers.RobertaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=66,
        pad_token_id=tok.pad_token_id,
        num_labels=3,
        id2label={0: "bad", 1: "meh", 2: "good"},
        label2id={"bad": 0, "meh": 1, "good": 2},
    )
    return _save(transformers.RobertaForSequenceClassification(config), tok, folder)


def t5_translation(folder: Path, seed: int = 9) -> Path:
    """A T5 with the T5-style task prefixes in ``task_specific_params``."""
    import tokenizers
    from tokenizers import models, pre_tokenizers, processors

    _seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["<pad>", "</s>", "<unk>", *sorted(set(WORDS) | {"translate", "to", "summarize", "English", "French"})]
    backend = tokenizers.Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    config = transformers.T5Config(
        vocab_size=len(vocab),
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=2,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        task_specific_params={
            "summarization": {"prefix": "summarize: ", "max_length": 20, "num_beams": 2},
            "translation_en_to_fr": {"prefix": "translate English to French: ", "max_length": 24, "num_beams": 3},
        },
    )
    return _save(transformers.T5ForConditionalGeneration(config), tok, folder)


def gpt2_chat(folder: Path, seed: int = 5) -> Path:
    """The tiny GPT-2 with a chat template (role-tagged turns, then an assistant tag)."""
    gpt2_text_generation(folder, seed=seed)
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    tok.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    tok.save_pretrained(str(folder))
    return folder


def qwen2_chat(folder: Path, seed: int = 13) -> Path:
    """A tiny Qwen2 chat model with a ChatML template: the shape vLLM's CPU attention takes (head size 32)."""
    _seed(seed)
    tok = bytelevel_bpe_tokenizer(folder, special=("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|endoftext|>"
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    config = transformers.Qwen2Config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=32, max_position_embeddings=512, tie_word_embeddings=True,
        initializer_range=0.4,
        bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"), eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
    )  # fmt: skip
    return _save(transformers.Qwen2ForCausalLM(config), tok, folder)


def _media_chat_tokenizer(
    folder: Path, media_tokens: list[str], placeholders: dict[str, str], cls: type = transformers.GPT2TokenizerFast
) -> tuple[Any, str]:
    """A byte-level BPE tokenizer with ChatML tokens plus ``media_tokens``, and a ChatML template that writes
    each media part (``{"type": "image"}``, ...) as its ``placeholders`` text."""
    special = ["<|im_start|>", "<|im_end|>", *media_tokens]
    tok = bytelevel_bpe_tokenizer(folder, cls=cls, special=("<|endoftext|>", *special))
    tok.add_special_tokens({"additional_special_tokens": special})
    tok.eos_token, tok.pad_token = "<|im_end|>", "<|endoftext|>"
    branches = [f"if p['type'] == '{kind}' %}}{text}" for kind, text in placeholders.items()]
    branches.append("if p['type'] == 'text' %}{{ p['text'] }}")
    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
        "{% else %}{% for p in m['content'] %}{% " + "{% el".join(branches) + "{% endif %}{% endfor %}{% endif %}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return tok, template


def llava_chat(folder: Path, seed: int = 14) -> Path:
    """A tiny LLaVA (CLIP vision tower + Llama) with a ChatML template that takes image parts; PIL processing only."""
    _seed(seed)
    tok, template = _media_chat_tokenizer(folder, ["<image>"], {"image": "<image>"})
    # transformers 5 names the PIL-based processor apart; on 4.x the plain one is PIL-based.
    pil_processor = getattr(transformers, "CLIPImageProcessorPil", transformers.CLIPImageProcessor)
    images = pil_processor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    processor = transformers.LlavaProcessor(
        image_processor=images, tokenizer=tok, patch_size=14, chat_template=template, image_token="<image>",
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )  # fmt: skip
    vision = transformers.CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=28, patch_size=14,
        projection_dim=32,
    )  # fmt: skip
    text = transformers.LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=32, max_position_embeddings=512, initializer_range=0.4,
        bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"), eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
    )  # fmt: skip
    config = transformers.LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default", vision_feature_layer=-1,
    )  # fmt: skip
    transformers.LlavaForConditionalGeneration(config).eval().save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return folder


def qwen2_vl_chat(folder: Path, seed: int = 15) -> Path:
    """A tiny Qwen2-VL (images and videos in the messages), shaped for vLLM's CPU attention (head size 32).

    Its processor includes a video processor, which needs torchvision (the vLLM environment has it).
    """
    _seed(seed)
    media = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    placeholders = {"image": "<|vision_start|><|image_pad|><|vision_end|>",
                    "video": "<|vision_start|><|video_pad|><|vision_end|>"}  # fmt: skip
    tok, template = _media_chat_tokenizer(folder, media, placeholders, cls=transformers.Qwen2TokenizerFast)
    pixels = {"min_pixels": 56 * 56, "max_pixels": 56 * 56}
    processor = transformers.Qwen2VLProcessor(
        image_processor=transformers.Qwen2VLImageProcessor(**pixels),
        video_processor=transformers.Qwen2VLVideoProcessor(**pixels),
        tokenizer=tok, chat_template=template,
    )  # fmt: skip
    ids = {name: tok.convert_tokens_to_ids(name) for name in [*media, "<|im_end|>", "<|endoftext|>"]}
    text = {
        "vocab_size": len(tok), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32, "max_position_embeddings": 512,
        "initializer_range": 0.4, "rope_parameters": {"rope_type": "default", "mrope_section": [4, 6, 6]},
        "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
    }  # fmt: skip
    vision = {"depth": 2, "embed_dim": 32, "hidden_size": 64, "num_heads": 2, "mlp_ratio": 2, "patch_size": 14,
              "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3}  # fmt: skip
    config = transformers.Qwen2VLConfig(
        text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=True,
    )  # fmt: skip
    transformers.Qwen2VLForConditionalGeneration(config).eval().save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return folder


def _wav2vec2_config(**extra) -> transformers.Wav2Vec2Config:
    """A tiny Wav2Vec2: two small conv layers (20x downsampling), one transformer layer."""
    return transformers.Wav2Vec2Config(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8),
        conv_stride=(5, 4),
        conv_kernel=(10, 4),
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
        **extra,
    )


def wav2vec2_audio_classification(folder: Path, seed: int = 10) -> Path:
    """A tiny audio classifier on raw 16 kHz waveforms (a task outside the seed list)."""
    _seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    config = _wav2vec2_config(
        vocab_size=8,
        num_labels=2,
        id2label={0: "speech", 1: "music"},
        label2id={"speech": 0, "music": 1},
        classifier_proj_size=8,
    )
    extractor = transformers.Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True)
    model = transformers.Wav2Vec2ForSequenceClassification(config).eval()
    model.save_pretrained(str(folder))
    extractor.save_pretrained(str(folder))
    return folder


def vit_image_classification(folder: Path, seed: int = 11) -> Path:
    """A tiny ViT on 32x32 images with two labels."""
    _seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    config = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        num_channels=3,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=2,
        id2label={0: "cat", 1: "dog"},
        label2id={"cat": 0, "dog": 1},
    )
    processor = transformers.ViTImageProcessor(size={"height": 32, "width": 32})
    transformers.ViTForImageClassification(config).eval().save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return folder


def wav2vec2_ctc(folder: Path, seed: int = 12) -> Path:
    """A tiny character-level CTC speech recognizer on 16 kHz audio."""
    import json

    _seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    chars = ["<pad>", "<s>", "</s>", "<unk>", "|", *"abcdefghijklmnopqrstuvwxyz'"]
    (folder / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(chars)}))
    tokenizer = transformers.Wav2Vec2CTCTokenizer(
        str(folder / "vocab.json"), unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|"
    )
    extractor = transformers.Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True)
    processor = transformers.Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer)
    config = _wav2vec2_config(vocab_size=len(chars), pad_token_id=0)
    transformers.Wav2Vec2ForCTC(config).eval().save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return folder


def decompression_bomb_png(width: int, height: int) -> bytes:
    """A valid PNG of ``width`` x ``height`` black pixels that compresses to a few kilobytes per million rows:
    an input whose header claims far more pixels than its bytes suggest."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    row = bytes(1 + width)  # filter byte + pixels
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def silent_wav(seconds: float, rate: int = 16000) -> bytes:
    """``seconds`` of 16-bit mono silence as WAV bytes."""
    import io

    import numpy as np
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(round(seconds * rate), dtype="int16"), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()
